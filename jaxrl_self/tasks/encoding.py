"""Text to token arrays: prompts left-padded, completions right-padded, as the samplers and trainers take them."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxrl_self.models.tokenizer import pad_batch


def encode_prompts(tokenizer, prompts: Sequence[str], prompt_len: int):
    """BOS + prompt, left-padded: `[N, prompt_len] int32` and `[N, prompt_len] bool`.

    No BOS is added to a prompt that already starts with it (a chat template that writes it).
    """
    bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
    encoded = [tokenizer.encode(p) for p in prompts]
    return pad_batch([ids if ids[:1] == bos else bos + ids for ids in encoded], prompt_len, tokenizer.pad_id, side="left")


def prompt_length(tokenizer, prompt: str) -> int:
    """Tokens of `prompt` as `encode_prompts` writes it (with BOS), before padding."""
    ids = tokenizer.encode(prompt)
    return len(ids) + (tokenizer.bos_id is not None and ids[:1] != [tokenizer.bos_id])


def encode_pairs(tokenizer, prompts: Sequence[str], completions: Sequence[str], prompt_len: int, completion_len: int):
    """Prompts left-padded to `[N, prompt_len]`, completions (+ EOS) right-padded to `[N, completion_len]`."""
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, prompts, prompt_len)
    completion_ids = [tokenizer.encode(c) + [tokenizer.eos_id] for c in completions]
    completion_tokens, completion_mask = pad_batch(completion_ids, completion_len, tokenizer.pad_id, side="right")
    return {"prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask,
            "completion_tokens": completion_tokens, "completion_mask": completion_mask}


def sft_batch(tokenizer, examples, prompt_len: int, completion_len: int):
    """An SFT batch from `Example`s that carry a worked `solution`."""
    missing = [e.uid for e in examples if not e.solution]
    if missing:
        raise ValueError(f"examples {missing[:5]} have no solution to fine-tune on")
    batch = encode_pairs(tokenizer, [e.prompt for e in examples], [e.solution for e in examples], prompt_len, completion_len)
    return {k: np.asarray(v) for k, v in batch.items()}
