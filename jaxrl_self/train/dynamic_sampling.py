"""DAPO dynamic sampling (docs/algorithms.md#dynamic-sampling-and-group-filtering) with fixed shapes: keep sampling rounds of B prompts
until B groups whose rewards are not all equal are collected, or the round cap is reached.

A rollout is any pytree of arrays whose leading axis is N = B*G rows (row b*G+g is completion g of
prompt b). After each round the kept groups so far and the new round's groups (2B in all) are
merged by `algorithms.filtering.select_groups_with_signal` into B groups with the valid ones
first, so every round runs the same compiled functions. Groups still invalid when the cap is hit
stay in the batch with `group_valid` False; the learner masks them out of the loss.

With several processes each one collects groups from its own prompts (its B/S of every round) and
merges only those; the processes run the same number of rounds (until every group of every
process is valid) and agree on the metrics.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.multihost_utils import process_allgather

from jaxrl_self.algorithms.filtering import group_has_signal, select_groups_with_signal


def make_group_merger(group_size: int):
    """Jitted `merge(pool, pool_valid, new, new_rewards) -> (pool, pool_valid)`.

    pool/new: rollout pytrees with `[B*G, ...]` leaves; pool_valid `[B]` bool; new_rewards
    `[B*G]` float (groups with all-equal rewards are invalid). Returns B groups, the valid ones
    of both first (pool before new, each in order), and their `[B]` validity.
    """

    @jax.jit
    def merge(pool, pool_valid, new, new_rewards):
        num_groups = pool_valid.shape[0]
        keep = jnp.concatenate([pool_valid, group_has_signal(new_rewards.reshape(num_groups, group_size))])
        indices, valid = select_groups_with_signal(keep, num_groups)
        rows = (indices[:, None] * group_size + jnp.arange(group_size)).reshape(-1)
        return jax.tree.map(lambda a, b: jnp.concatenate([a, b])[rows], pool, new), valid

    return merge


def collect_groups(draw: Callable[[int], tuple[Any, jax.Array, dict]], merge, *, group_size: int, max_rounds: int,
                   filter_groups: bool):
    """Runs sampling rounds and returns a batch of B groups (this process's B/S with S processes).

    Args:
      draw: `draw(round) -> (rollout, rewards [B*G], metrics)`; samples and scores B fresh prompts
        (this process's rows, host-addressable arrays; metrics are means over them, or counts
        named "verifier_failures/...").
      merge: from `make_group_merger(group_size)`.
      group_size: G.
      max_rounds: the most calls to `draw` (1 = no resampling).
      filter_groups: mark groups with all-equal rewards invalid (DAPO, `filter_zero_advantage_groups`).
    Returns:
      (rollout, group_valid `[B]` bool array, metrics): metrics averaged over rounds and processes
      (counters named "verifier_failures/..." summed) plus "dynamic_sampling/rounds" and
      "dynamic_sampling/valid_fraction" (valid groups in the returned batches of all processes).
    """
    rollout, rewards, metrics = draw(0)
    per_round = [metrics]
    num_groups = rewards.shape[0] // group_size
    if filter_groups:
        valid = group_has_signal(rewards.reshape(num_groups, group_size))
    else:
        valid = jnp.ones((num_groups,), bool)

    def all_valid_everywhere() -> bool:  # every process must run the same rounds: they sample together
        return bool(np.all(process_allgather(np.all(np.asarray(valid)))))

    while len(per_round) < max_rounds and not all_valid_everywhere():
        new_rollout, new_rewards, metrics = draw(len(per_round))
        rollout, valid = merge(rollout, valid, new_rollout, new_rewards)
        per_round.append(metrics)
    per_round = process_allgather(jax.device_get(per_round))  # every metric: [process_count] per round
    reduce = lambda key: np.sum if key.startswith("verifier_failures/") else np.mean
    summary = {k: float(reduce(k)(np.concatenate([m[k] for m in per_round]))) for k in per_round[0]}
    summary["dynamic_sampling/rounds"] = float(len(per_round))
    summary["dynamic_sampling/valid_fraction"] = float(np.mean(process_allgather(np.asarray(valid))))
    return rollout, valid, summary
