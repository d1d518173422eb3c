"""The tokenizer stored in a GGUF file's metadata, rebuilt with the `tokenizers` library.

A GGUF file carries no `tokenizer.json`: it lists the tokens (`tokenizer.ggml.tokens`), their
types (3 = control, 4 = user-defined), the BPE merges, the special token ids, `add_bos_token`
and the chat template. `write_gguf_tokenizer` turns these into `tokenizer.json` +
`tokenizer_config.json` the way transformers' GGUF loader does (byte-level BPE, control tokens
as special added tokens, user-defined ones as plain added tokens), so the result is an ordinary
tokenizer directory: `HFTokenizer` reads it (`load_gguf_tokenizer`), and a conversion to HF or
orbax copies it.

Supported: `tokenizer.ggml.model == "gpt2"` (byte-level BPE) with the GPT-2 split
(`tokenizer.ggml.pre` in GPT2_STYLE_PRE_TOKENIZERS); other tokenizer models or split rules are an
error naming them.
"""
from __future__ import annotations

import json
import os
import tempfile

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from jaxrl_self.models.gguf import metadata
from jaxrl_self.models.hf_config import CheckpointError
from jaxrl_self.models.hf_tokenizer import HFTokenizer

# llama.cpp pre-tokenizer names whose split is GPT-2's regex (ByteLevel(use_regex=True)).
GPT2_STYLE_PRE_TOKENIZERS = ("default", "gpt-2", "smollm")
CONTROL, USER_DEFINED = 3, 4
_SPECIAL_IDS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
                "pad_token": "padding_token_id"}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE spells every token with these)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def build_gguf_tokenizer(reader, source: str) -> tuple[Tokenizer, dict]:
    """(`tokenizers.Tokenizer`, tokenizer_config dict) from a `gguf.GGUFReader`'s metadata."""
    kind = metadata(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(f"{source}: GGUF tokenizer model {kind!r} is not supported (only 'gpt2', byte-level BPE)")
    pre = metadata(reader, "tokenizer.ggml.pre", "default")
    if pre not in GPT2_STYLE_PRE_TOKENIZERS:
        raise CheckpointError(f"{source}: GGUF pre-tokenizer {pre!r} is not supported (supported: {', '.join(GPT2_STYLE_PRE_TOKENIZERS)})")
    tokens = metadata(reader, "tokenizer.ggml.tokens")
    merges = metadata(reader, "tokenizer.ggml.merges")
    if not tokens or merges is None:
        raise CheckpointError(f"{source}: metadata tokenizer.ggml.tokens / tokenizer.ggml.merges is missing")
    token_types = metadata(reader, "tokenizer.ggml.token_type") or [1] * len(tokens)

    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    spelled = [t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")) for t in tokens]
    vocab = {token: index for index, token in enumerate(spelled)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges], fuse_unk=False,
                                     byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    # a control token spelled outside the byte alphabet is a llama.cpp mislabel (transformers skips it too)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                  for t, kind in zip(tokens, token_types) if kind == CONTROL and set(t) <= alphabet])
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False)
                          for t, kind in zip(tokens, token_types) if kind == USER_DEFINED and t in vocab])

    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "add_bos_token": bool(metadata(reader, "tokenizer.ggml.add_bos_token", False)),
              "add_eos_token": bool(metadata(reader, "tokenizer.ggml.add_eos_token", False))}
    for name, key in _SPECIAL_IDS.items():
        token_id = metadata(reader, f"tokenizer.ggml.{key}")
        if token_id is not None:
            config[name] = tokens[int(token_id)]
    template = metadata(reader, "tokenizer.chat_template")
    if template is not None:
        config["chat_template"] = template
    added = [config[name] for name, flag in (("bos_token", "add_bos_token"), ("eos_token", "add_eos_token"))
             if config[flag] and name in config]
    if added:
        single = " ".join([f"{config['bos_token']}:0"] * config["add_bos_token"] + ["$A:0"]
                          + [f"{config['eos_token']}:0"] * config["add_eos_token"])
        tokenizer.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, tokenizer.token_to_id(t)) for t in dict.fromkeys(added)])
    return tokenizer, config


def write_gguf_tokenizer(reader, source: str, out_dir: str) -> list[str]:
    """Writes `tokenizer.json` and `tokenizer_config.json` for the tokenizer of `reader` (`gguf.open_gguf`)."""
    tokenizer, config = build_gguf_tokenizer(reader, source)
    os.makedirs(out_dir, exist_ok=True)
    tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    return ["tokenizer.json", "tokenizer_config.json"]


def load_gguf_tokenizer(reader, source: str) -> HFTokenizer:
    """The tokenizer of `reader` (`gguf.open_gguf`) behind the `HFTokenizer` interface, chat template included."""
    with tempfile.TemporaryDirectory() as tmp:
        write_gguf_tokenizer(reader, source, tmp)
        return HFTokenizer(tmp)
