"""DAPO dynamic sampling and overlong reward shaping, static shapes
(docs/algorithms.md#dynamic-sampling-and-group-filtering, docs/algorithms.md#overlong-reward-shaping)."""

import jax.numpy as jnp


def group_has_signal(rewards):
    """Keep-mask of groups whose rewards are not all equal (DAPO dynamic sampling).

    Args:
      rewards: `[B, G]` float rewards.
    Returns:
      `[B]` bool, True where the group has at least two different rewards.
    """
    rewards = jnp.asarray(rewards)
    return jnp.any(rewards != rewards[:, :1], axis=-1)


def overlong_penalty(lengths, *, max_len, cache_len):
    """DAPO soft overlong punishment R_len(L) (docs/algorithms.md#overlong-reward-shaping).

    0 for `L <= max_len - cache_len`, `((max_len - cache_len) - L) / cache_len` up to
    `max_len`, -1 beyond.

    Args:
      lengths: `[N]` int or float completion lengths.
      max_len: L_max; cache_len: L_cache.
    Returns:
      `[N]` float32 penalties in [-1, 0], to be added to the correctness reward.
    """
    lengths = jnp.asarray(lengths, jnp.float32)
    soft_start = max_len - cache_len
    linear = (soft_start - lengths) / cache_len
    return jnp.where(lengths <= soft_start, 0.0, jnp.where(lengths <= max_len, linear, -1.0)).astype(jnp.float32)


def select_groups_with_signal(keep, num_groups):
    """Fixed-size selection of the first `num_groups` kept groups, in their original order.

    Args:
      keep: `[B_total]` bool, e.g. `group_has_signal(rewards)` over an oversampled batch.
      num_groups: static B <= B_total.
    Returns:
      (indices `[B]` int32 into `B_total`, valid `[B]` bool). When fewer than B groups are kept
      the trailing slots point at dropped groups and have valid False.
    """
    keep = jnp.asarray(keep, bool)
    total = keep.shape[0]
    if num_groups > total:
        raise ValueError(f"cannot select {num_groups} groups out of {total}")
    order = jnp.argsort(jnp.logical_not(keep), stable=True)
    indices = order[:num_groups].astype(jnp.int32)
    valid = jnp.arange(num_groups) < jnp.sum(keep)
    return indices, valid
