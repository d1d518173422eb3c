"""Prompt-length bucketing: pad prompt batches to a few lengths so the jitted sampler compiles a
bounded number of times (once per bucket and batch size, whatever the prompts' exact lengths)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxrl_self.models.tokenizer import bucket_length, pad_batch


def pad_prompts(sequences: Sequence[Sequence[int]], pad_id: int, multiple: int = 16):
    """Left-pads token lists to the bucketed longest length.

    Returns `[B, P] int32` tokens and `[B, P] bool` mask with P = `bucket_length(max len, multiple)`.
    """
    longest = max((len(s) for s in sequences), default=0)
    return pad_batch(sequences, bucket_length(longest, multiple), pad_id, side="left")


def bucket_prompt_batch(prompt_tokens, prompt_mask, pad_id: int, multiple: int = 16):
    """Re-pads a left-padded `[B, P]` batch to `[B, P']`, P' = `bucket_length(longest prompt, multiple)`.

    Drops leading all-padding columns or adds new ones on the left; prompt tokens are unchanged.
    Raises ValueError if a row is not left-padded (a real token followed by padding).
    """
    tokens, mask = np.asarray(prompt_tokens), np.asarray(prompt_mask, bool)
    if np.any(mask[:, :-1] & ~mask[:, 1:]):
        raise ValueError("prompts must be left-padded: a row has padding after a real token")
    width = bucket_length(int(mask.sum(axis=1).max(initial=0)), multiple)
    keep = min(width, tokens.shape[1])
    out_tokens = np.full((tokens.shape[0], width), pad_id, np.int32)
    out_mask = np.zeros((tokens.shape[0], width), bool)
    out_tokens[:, width - keep:] = tokens[:, tokens.shape[1] - keep:]
    out_mask[:, width - keep:] = mask[:, tokens.shape[1] - keep:]
    return out_tokens, out_mask
