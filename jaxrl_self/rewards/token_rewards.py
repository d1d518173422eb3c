"""Rewards computed directly on token arrays: pure JAX, static shapes, jit/vmap-able.

Tags such as ``<answer>`` are given as token-id tuples (what the tokenizer produces for the
tag text). The answer span is the content between the last open tag that has a close tag
after it and the first close tag after that open tag (the same rule as
``answers.extract_tagged``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxrl_self.algorithms.filtering import overlong_penalty


def _pattern_starts(tokens: jax.Array, mask: jax.Array, pattern: Sequence[int]) -> jax.Array:
    """``[N, T] bool``: the token sequence ``pattern`` starts at position t, fully inside the mask."""
    if len(pattern) == 0:
        raise ValueError("tag token sequence must not be empty")
    valid = jnp.asarray(mask) > 0
    starts = jnp.ones(tokens.shape, dtype=bool)
    for offset, token_id in enumerate(pattern):
        shifted_tokens = jnp.pad(tokens[:, offset:], ((0, 0), (0, offset)))
        shifted_valid = jnp.pad(valid[:, offset:], ((0, 0), (0, offset)), constant_values=False)
        starts &= (shifted_tokens == token_id) & shifted_valid
    return starts


def answer_span(tokens: jax.Array, mask: jax.Array, open_ids: Sequence[int],
                close_ids: Sequence[int]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Locate the answer between the last well-formed open/close tag pair.

    Args:
      tokens: ``[N, T] int32`` completion tokens.
      mask: ``[N, T]`` completion mask (tags must lie where mask > 0).
      open_ids, close_ids: token ids of the open and close tags (static tuples).

    Returns:
      ``(start [N] int32, end [N] int32, found [N] bool)``: the content is ``tokens[n, start:end]``
      (start just after the open tag, end at the close tag). ``start = end = 0`` when not found.
    """
    num_positions = tokens.shape[1]
    positions = jnp.arange(num_positions, dtype=jnp.int32)[None, :]
    open_starts = _pattern_starts(tokens, mask, open_ids)
    close_starts = _pattern_starts(tokens, mask, close_ids)
    last_close = jnp.max(jnp.where(close_starts, positions, -1), axis=1)
    usable_open = open_starts & (positions + len(open_ids) <= last_close[:, None])
    open_position = jnp.max(jnp.where(usable_open, positions, -1), axis=1)
    found = open_position >= 0
    start = open_position + len(open_ids)
    close_after = close_starts & (positions >= start[:, None])
    end = jnp.min(jnp.where(close_after, positions, num_positions), axis=1)
    return (jnp.where(found, start, 0).astype(jnp.int32), jnp.where(found, end, 0).astype(jnp.int32),
            found)


def extract_answer_tokens(tokens: jax.Array, mask: jax.Array, open_ids: Sequence[int],
                          close_ids: Sequence[int], width: int,
                          pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
    """Fixed-width answer token arrays for voting (``majority_vote``).

    Returns:
      ``(answer_tokens [N, width] int32, valid [N] bool)``: the span content left-aligned and
      padded with ``pad_id``; valid is False when no span was found or it is longer than width.
    """
    start, end, found = answer_span(tokens, mask, open_ids, close_ids)
    offsets = jnp.arange(width, dtype=jnp.int32)[None, :]
    index = jnp.clip(start[:, None] + offsets, 0, tokens.shape[1] - 1)
    gathered = jnp.take_along_axis(tokens, index, axis=1)
    in_span = offsets < (end - start)[:, None]
    answer_tokens = jnp.where(in_span, gathered, pad_id).astype(jnp.int32)
    return answer_tokens, found & (end - start <= width)


def exact_match_reward(tokens: jax.Array, mask: jax.Array, reference_tokens: jax.Array,
                       reference_mask: jax.Array, open_ids: Sequence[int],
                       close_ids: Sequence[int]) -> jax.Array:
    """1.0 where the answer span equals the reference tokens exactly, else 0.0.

    Args:
      tokens, mask: ``[N, T]`` completion tokens and mask.
      reference_tokens: ``[N, R] int32`` reference answers, left-aligned.
      reference_mask: ``[N, R]``, 1 on the reference tokens (a prefix of each row).
      open_ids, close_ids: tag token ids.

    Returns:
      ``[N] float32``.
    """
    start, end, found = answer_span(tokens, mask, open_ids, close_ids)
    reference_length = jnp.sum(jnp.asarray(reference_mask) > 0, axis=1)
    offsets = jnp.arange(reference_tokens.shape[1], dtype=jnp.int32)[None, :]
    index = jnp.clip(start[:, None] + offsets, 0, tokens.shape[1] - 1)
    gathered = jnp.take_along_axis(tokens, index, axis=1)
    in_reference = offsets < reference_length[:, None]
    same_tokens = jnp.all(jnp.where(in_reference, gathered == reference_tokens, True), axis=1)
    return (found & (end - start == reference_length) & same_tokens).astype(jnp.float32)


def format_reward(tokens: jax.Array, mask: jax.Array, open_ids: Sequence[int],
                  close_ids: Sequence[int]) -> jax.Array:
    """``[N] float32``: 1.0 where a well-formed open/close tag pair exists."""
    return answer_span(tokens, mask, open_ids, close_ids)[2].astype(jnp.float32)


def length_penalty(lengths: jax.Array, *, max_len: int, cache_len: int) -> jax.Array:
    """DAPO soft overlong penalty ``[N] float32`` in [-1, 0] (``algorithms.filtering.overlong_penalty``)."""
    return overlong_penalty(lengths, max_len=max_len, cache_len=cache_len)


def majority_vote(answer_tokens: jax.Array,
                  answer_valid: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Majority vote within each group over fixed-width answers (TTRL, docs/algorithms.md#ttrl-majority-vote).

    Two answers agree when their whole ``[A]`` rows are equal (pad them identically). Invalid
    answers never vote and never agree. Ties go to the answer that occurs first.

    Args:
      answer_tokens: ``[B, G, A] int32``.
      answer_valid: ``[B, G] bool``.

    Returns:
      ``(majority_index [B] int32`` (a member of the winning answer; 0 if no valid answer),
      ``majority_count [B] int32, agrees [B, G] bool)``. ``majority_count / G`` is maj_ratio.
    """
    valid = jnp.asarray(answer_valid, bool)
    same = jnp.all(answer_tokens[:, :, None, :] == answer_tokens[:, None, :, :], axis=-1)
    same &= valid[:, :, None] & valid[:, None, :]
    counts = jnp.sum(same, axis=-1, dtype=jnp.int32)
    # Members of one answer share its count, so argmax (first maximum) picks the first
    # occurrence of the earliest-occurring answer among those tied for the most votes.
    majority_index = jnp.argmax(counts, axis=-1).astype(jnp.int32)
    majority_count = jnp.take_along_axis(counts, majority_index[:, None], axis=1)[:, 0]
    agrees = jnp.take_along_axis(same, majority_index[:, None, None], axis=1)[:, 0, :]
    return majority_index, majority_count, agrees


def combine_rewards(components: Mapping[str, jax.Array],
                    weights: Mapping[str, float]) -> tuple[jax.Array, Mapping[str, jax.Array]]:
    """Weighted sum of named ``[N]`` reward components; components without a weight are only logged.

    Returns:
      ``(total [N] float32, components)``.

    Raises:
      KeyError: naming a weighted component that is missing.
    """
    missing = sorted(set(weights) - set(components))
    if missing:
        raise KeyError(f"reward weights name missing components {missing}; have {sorted(components)}")
    if not weights:
        raise ValueError("combine_rewards needs at least one weight")
    total = sum(float(weight) * jnp.asarray(components[name], jnp.float32)
                for name, weight in weights.items())
    return total, components
