"""Hugging Face tokenizers (`tokenizer.json`) behind the `CharTokenizer` interface, plus chat templates.

Reads a tokenizer directory as transformers saves it: `tokenizer.json` (required), and when present
`tokenizer_config.json` (special tokens, `chat_template`), `special_tokens_map.json` (legacy special
tokens) and `chat_template.jinja` (transformers >= 4.43 stores the template there). No transformers
or torch at run time: encoding is the `tokenizers` library, templates are rendered with jinja2 in
the sandboxed environment transformers uses.

Decoding is `tokenizers`' decode; transformers' optional `clean_up_tokenization_spaces` (which
transformers 5 skips for BPE tokenizers anyway) is not applied.
"""
from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Optional, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from jaxrl_self.models.hf_config import CheckpointError
from jaxrl_self.models.tokenizer import pad_batch

_SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _token_text(value) -> Optional[str]:
    """A special token as saved: a string, or an AddedToken dict with "content"."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def _chat_template(tokenizer_dir: str, tokenizer_config: dict) -> Optional[str]:
    """The default chat template: `chat_template.jinja`, else `tokenizer_config.json`'s `chat_template`."""
    jinja_path = os.path.join(tokenizer_dir, "chat_template.jinja")
    if os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            return f.read()
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t["name"]: t["template"] for t in template}
        template = named.get("default")
    return template


def _compile_template(template: str) -> jinja2.Template:
    """Compiles a chat template with the environment, filters and globals transformers provides."""

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


class HFTokenizer:
    """A `tokenizer.json` tokenizer with the `CharTokenizer` interface.

    pad_id falls back to eos_id when the tokenizer has no pad token; bos_id may be None.
    """

    def __init__(self, tokenizer_dir: str):
        path = os.path.join(tokenizer_dir, "tokenizer.json")
        if not os.path.isfile(path):
            raise CheckpointError(f"no tokenizer.json in tokenizer directory {tokenizer_dir!r}")
        self.tokenizer = Tokenizer.from_file(path)
        config_path = os.path.join(tokenizer_dir, "tokenizer_config.json")
        config = _read_json(config_path)
        legacy = _read_json(os.path.join(tokenizer_dir, "special_tokens_map.json"))
        self.special_tokens = {}
        for key in _SPECIAL_TOKEN_KEYS:
            text = _token_text(config.get(key, legacy.get(key)))
            if text is not None:
                self.special_tokens[key] = text
        self.eos_id = self._special_id("eos_token", tokenizer_dir)
        if self.eos_id is None:
            raise CheckpointError(f"{config_path}: no eos_token; the sampler needs one to stop generation")
        self.bos_id = self._special_id("bos_token", tokenizer_dir)
        pad_id = self._special_id("pad_token", tokenizer_dir)
        self.pad_id = self.eos_id if pad_id is None else pad_id
        template = _chat_template(tokenizer_dir, config)
        self.chat_template = template
        self._compiled_template = None if template is None else _compile_template(template)

    def _special_id(self, key: str, tokenizer_dir: str) -> Optional[int]:
        text = self.special_tokens.get(key)
        if text is None:
            return None
        token_id = self.tokenizer.token_to_id(text)
        if token_id is None:
            raise CheckpointError(f"{key} {text!r} of {tokenizer_dir!r} is not in the vocabulary of its tokenizer.json")
        return token_id

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included (a model's embedding may be larger)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; the post-processor's special tokens (e.g. a BOS) only when asked."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def encode_batch(self, texts: Sequence[str], length: int, side: str = "left", add_eos: bool = False):
        """`[N, length] int32` ids and `[N, length] bool` mask (left padding for prompts)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        seqs = [e.ids + ([self.eos_id] if add_eos else []) for e in encodings]
        return pad_batch(seqs, length, self.pad_id, side)

    def apply_chat_template(self, messages: Sequence[dict], add_generation_prompt: bool = True, **kwargs) -> str:
        """The chat rendered as text, as transformers' `apply_chat_template(..., tokenize=False)`.

        messages: [{"role": ..., "content": ...}, ...]; kwargs reach the template (e.g. enable_thinking,
        tools); `tools` and `documents` default to None as in transformers.
        """
        if self._compiled_template is None:
            raise ValueError("this tokenizer has no chat_template (neither chat_template.jinja nor tokenizer_config.json)")
        variables = {"tools": None, "documents": None, **self.special_tokens, **kwargs}
        return self._compiled_template.render(
            messages=[dict(m) for m in messages], add_generation_prompt=add_generation_prompt, **variables)
