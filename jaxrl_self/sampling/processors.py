"""Logits processors: temperature, top-k, top-p, min-p and greedy, vectorized over rows.

All settings are traced scalars, so changing them between calls does not recompile. A setting
at its neutral value (top_k=0, top_p=1, min_p=0) leaves the distribution unchanged.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def mask_padded_vocab(logits: jnp.ndarray, vocab_size: int) -> jnp.ndarray:
    """Sets logits of padded vocabulary slots (index >= vocab_size) to -inf. `[..., V]`."""
    if vocab_size >= logits.shape[-1]:
        return logits
    return jnp.where(jnp.arange(logits.shape[-1]) < vocab_size, logits, NEG_INF)


def scale_by_temperature(logits: jnp.ndarray, temperature) -> jnp.ndarray:
    """`logits / temperature`; temperature <= 0 (greedy) leaves logits unscaled."""
    safe = jnp.where(temperature > 0, temperature, 1.0)
    return logits / safe


def truncate(logits: jnp.ndarray, top_k, top_p, min_p) -> jnp.ndarray:
    """Sets logits outside the top-k / nucleus top-p / min-p sets to -inf. `[N, V] float32`.

    top-p keeps the smallest prefix of tokens (by probability) whose mass reaches top_p, always
    including the most likely token; min-p keeps tokens with p >= min_p * p_max.
    """
    vocab = logits.shape[-1]
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth_largest = jnp.take_along_axis(sorted_logits, jnp.broadcast_to(k - 1, logits.shape[:-1])[..., None], axis=-1)
    keep = logits >= kth_largest

    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    in_nucleus = mass_before < top_p
    # the smallest logit still inside the nucleus is the threshold
    nucleus_size = jnp.maximum(jnp.sum(in_nucleus, axis=-1, keepdims=True), 1)
    nucleus_threshold = jnp.take_along_axis(sorted_logits, nucleus_size - 1, axis=-1)
    keep &= (logits >= nucleus_threshold) | (top_p >= 1.0)

    probs = jax.nn.softmax(logits, axis=-1)
    keep &= probs >= min_p * jnp.max(probs, axis=-1, keepdims=True)
    return jnp.where(keep, logits, NEG_INF)


def choose_tokens(keys: jnp.ndarray, logits: jnp.ndarray, temperature, top_k, top_p, min_p) -> jnp.ndarray:
    """One token per row: argmax when temperature <= 0, else a sample from the truncated distribution.

    keys `[N]` PRNG keys (one per row), logits `[N, V] float32` -> `[N] int32`.
    """
    scaled = truncate(scale_by_temperature(logits, temperature), top_k, top_p, min_p)
    sampled = jax.vmap(jax.random.categorical)(keys, scaled)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1)).astype(jnp.int32)
