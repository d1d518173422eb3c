"""Masked reductions and the loss aggregation modes (docs/algorithms.md#loss-aggregation-modes).

Every reduction uses the "safe where" pattern: values in masked-out slots are replaced by 0
before they are multiplied or summed, so a NaN/Inf in a padding slot never reaches the result
or its gradient.
"""

import jax.numpy as jnp

AGGREGATION_MODES = (
    "token_mean",
    "seq_mean_token_mean",
    "seq_mean_token_sum_norm",
    "seq_mean_token_sum",
)


def masked_sum(x, mask, axis=None, keepdims=False):
    """Sum of `x * mask` over `axis`.

    Args:
      x: `[...]` float array.
      mask: same shape as `x` (bool or float weights); slots with mask 0 are ignored, even if
        `x` is NaN there.
      axis: axis or axes to reduce; None reduces everything.
    Returns:
      float32 array with `axis` reduced.
    """
    mask = jnp.asarray(mask, jnp.float32)
    x_safe = jnp.where(mask != 0, jnp.asarray(x, jnp.float32), 0.0)
    return jnp.sum(x_safe * mask, axis=axis, keepdims=keepdims)


def masked_mean(x, mask, axis=None, keepdims=False):
    """Masked mean `sum(x*m) / max(sum(m), 1)` over `axis` (0 where nothing is valid).

    Args:
      x: `[...]` float array.
      mask: same shape as `x`, bool or float.
    Returns:
      float32 array with `axis` reduced.
    """
    count = jnp.sum(jnp.asarray(mask, jnp.float32), axis=axis, keepdims=keepdims)
    return masked_sum(x, mask, axis=axis, keepdims=keepdims) / jnp.maximum(count, 1.0)


def masked_var(x, mask, axis=None, ddof=0, keepdims=False):
    """Masked variance `sum(m*(x-mu)^2) / max(sum(m) - ddof, 1)` over `axis`.

    Args:
      x: `[...]` float array.
      mask: same shape as `x`, bool or float.
      ddof: 0 for the population variance, 1 for the unbiased sample variance.
    Returns:
      float32 array with `axis` reduced (0 where fewer than `ddof + 1` values are valid).
    """
    mean = masked_mean(x, mask, axis=axis, keepdims=True)
    x_safe = jnp.where(jnp.asarray(mask) != 0, jnp.asarray(x, jnp.float32), mean)
    count = jnp.sum(jnp.asarray(mask, jnp.float32), axis=axis, keepdims=keepdims)
    squared_sum = masked_sum(jnp.square(x_safe - mean), mask, axis=axis, keepdims=keepdims)
    return squared_sum / jnp.maximum(count - ddof, 1.0)


def aggregate(per_token, mask, mode, *, t_const=None, num_sequences=None, num_tokens=None):
    """Reduces a per-token loss to a scalar with one of `AGGREGATION_MODES` (docs/algorithms.md#loss-aggregation-modes).

    Args:
      per_token: `[..., T]` float per-token loss; leading axes are sequences (`[N, T]` or
        `[B, G, T]`).
      mask: same shape, 1 for tokens that carry loss.
      mode: one of `AGGREGATION_MODES`.
      t_const: the constant length normaliser of "seq_mean_token_sum_norm" (max new tokens).
      num_sequences: global number of sequences of the optimizer batch; replaces the local
        count so that summing `aggregate` over micro-batches equals the full-batch value.
      num_tokens: global number of valid tokens of the optimizer batch ("token_mean" only).
    Returns:
      scalar float32. Rows whose mask is all zero contribute 0 (but still count as sequences).
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; expected one of {AGGREGATION_MODES}")
    mask = jnp.asarray(mask, jnp.float32)
    local_sequences = mask[..., 0].size
    seq_denominator = local_sequences if num_sequences is None else num_sequences
    seq_denominator = jnp.maximum(jnp.asarray(seq_denominator, jnp.float32), 1.0)

    if mode == "token_mean":
        token_denominator = jnp.sum(mask) if num_tokens is None else num_tokens
        return masked_sum(per_token, mask) / jnp.maximum(jnp.asarray(token_denominator, jnp.float32), 1.0)
    if mode == "seq_mean_token_mean":
        per_sequence = masked_mean(per_token, mask, axis=-1)
        return jnp.sum(per_sequence) / seq_denominator
    if mode == "seq_mean_token_sum_norm":
        if t_const is None:
            raise ValueError("aggregation mode 'seq_mean_token_sum_norm' needs t_const")
        return masked_sum(per_token, mask) / (seq_denominator * t_const)
    return masked_sum(per_token, mask) / seq_denominator
