"""Curricula over a task's problem categories (docs/curricula.md): what each RL step samples.

SEC, the Self-Evolving Curriculum, is a non-stationary bandit whose arms are the K categories.
Its state is one value per category, `values [K]` (Q, 0 at the start). Each step:

  1. the policy is the softmax `pi(c) = exp(Q(c)/tau) / sum_c' exp(Q(c')/tau)`;
  2. each of the B prompt slots draws a category from pi, then a problem of that category;
  3. after the rollouts, the arm reward of each category drawn is its learnability
     `r(c)` = the mean absolute advantage of its problems' samples, over every group sampled
     (before any group filtering: groups whose rewards are all equal are the sign that a category
     is solved or hopeless);
  4. the drawn categories move towards it: `Q(c) <- alpha * r(c) + (1 - alpha) * Q(c)`; the others keep Q.

The advantage in (3) is GRPO's group-normalised one, `|r - mean_G r| / std_G r` with the run's
`rl.std_ddof` (0 for a group of equal rewards), whatever `rl.algorithm` is: for binary rewards
it lies in [0, 1] and peaks at a success rate of 1/2, so one temperature suits every algorithm.

Every function here is pure and jittable. The category draws come from the step's key
(`category_key`), the same on every process; a multi-process run sums the per-category
statistics of all processes before the update (the recipe's job), so every process holds the same Q.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

SEC_STREAM = 0x5EC  # folded into a sampling round's key for its category draws


def category_key(step_key, round_index: int):
    """The key of the category draws of sampling round `round_index` of a step (not the sampler's)."""
    return jax.random.fold_in(jax.random.fold_in(step_key, round_index), SEC_STREAM)


def policy(values, temperature: float):
    """SEC's Boltzmann policy: `softmax(values / temperature)`; values `[K]` -> probabilities `[K]`."""
    return jax.nn.softmax(jnp.asarray(values, jnp.float32) / temperature)


def draw_categories(values, temperature: float, key, num: int):
    """`num` categories drawn independently from `policy(values, temperature)`: `[num]` int32."""
    logits = jnp.asarray(values, jnp.float32) / temperature
    return jax.random.categorical(key, logits, shape=(num,)).astype(jnp.int32)


def group_learnability(rewards, std_ddof: int = 1, normalize_std: bool = True):
    """The mean absolute advantage of each group: rewards `[B, G]` -> `[B]` float32.

    `|r - mean_G r| / std_G r` (population std for std_ddof 0, unbiased for 1), or `|r - mean_G r|`
    without `normalize_std` (Dr. GRPO); 0 for a group whose rewards are all equal. std_ddof and
    normalize_std are Python values (static under `jit`).
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    centered = jnp.abs(rewards - jnp.mean(rewards, axis=-1, keepdims=True))
    if normalize_std:
        group_size = rewards.shape[-1]
        std = jnp.sqrt(jnp.sum(centered**2, axis=-1, keepdims=True) / max(group_size - std_ddof, 1))
        centered = jnp.where(std > 0, centered / jnp.where(std > 0, std, 1.0), 0.0)
    return jnp.mean(centered, axis=-1)


def category_statistics(rewards, correct, categories, num_categories: int, std_ddof: int = 1) -> dict:
    """Per-category sums over the groups of one sampling round.

    Args:
      rewards: `[B, G]` rewards of the G samples of each of B prompts.
      correct: `[B, G]` 0/1 correctness of each sample (the reward itself for a verifier reward).
      categories: `[B]` int, the category of each prompt.
      num_categories: K.
      std_ddof: the advantage's std (`group_learnability`).
    Returns:
      `[K]` float32 sums: "groups" (prompts drawn), "learnability" (of `group_learnability`),
      "correct" (correct samples), "zero_variance" (groups whose rewards are all equal). Sums add
      up over rounds and processes.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    segment = lambda x: jax.ops.segment_sum(x, categories, num_segments=num_categories)
    return {
        "groups": segment(jnp.ones(rewards.shape[0], jnp.float32)),
        "learnability": segment(group_learnability(rewards, std_ddof)),
        "correct": segment(jnp.sum(jnp.asarray(correct, jnp.float32), axis=-1)),
        "zero_variance": segment(jnp.all(rewards == rewards[:, :1], axis=-1).astype(jnp.float32)),
    }


def update(values, learnability, groups, step_size: float):
    """SEC's TD(0) step: `Q(c) <- step_size * r(c) + (1 - step_size) * Q(c)` for each category drawn
    (`groups > 0`), with `r(c) = learnability(c) / groups(c)`; the others keep their value.
    values, learnability, groups: `[K]`; returns the new values `[K]` float32."""
    values = jnp.asarray(values, jnp.float32)
    drawn = groups > 0
    reward = learnability / jnp.where(drawn, groups, 1.0)
    return jnp.where(drawn, step_size * reward + (1.0 - step_size) * values, values)


def category_metrics(stats: dict, names, group_size: int, values=None, temperature: float = 1.0) -> dict:
    """metrics.jsonl entries of one step from its summed `category_statistics` (host arrays):
    "curriculum/zero_variance" (of all groups drawn) and per category "curriculum/<name>/share" (of
    the samples), and, for a category drawn this step, "/accuracy" (of its samples) and
    "/zero_variance" (of its groups); with SEC's `values`, "/value" (Q after the update) and
    "/probability" (the policy of the next step)."""
    groups = stats["groups"]
    total = float(groups.sum())
    metrics = {"curriculum/zero_variance": float(stats["zero_variance"].sum()) / total}
    probabilities = None if values is None else policy(values, temperature)
    for c, name in enumerate(names):
        metrics[f"curriculum/{name}/share"] = float(groups[c]) / total
        if groups[c] > 0:
            metrics[f"curriculum/{name}/accuracy"] = float(stats["correct"][c]) / (float(groups[c]) * group_size)
            metrics[f"curriculum/{name}/zero_variance"] = float(stats["zero_variance"][c]) / float(groups[c])
        if values is not None:
            metrics[f"curriculum/{name}/value"] = float(values[c])
            metrics[f"curriculum/{name}/probability"] = float(probabilities[c])
    return metrics
