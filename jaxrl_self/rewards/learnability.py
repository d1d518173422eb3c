"""Absolute Zero's proposer and solver rewards as array ops (docs/algorithms.md#absolute-zero-rewards-and-trr).

Learnability: a proposed task the solver always or never solves teaches nothing, so the proposer
is paid `1 - s` for a solve rate `s` strictly between 0 and 1, and 0 otherwise. The final reward
is format aware: the role's reward when the response is passable (a valid task; a correct
answer), -0.5 when well formed but invalid or wrong, -1 on a format error.
"""
import jax.numpy as jnp

FORMAT_ERROR_REWARD = -1.0
WRONG_REWARD = -0.5


def learnability_reward(solve_rate):
    """`r = 0 if s in {0, 1} else 1 - s`.

    Args:
      solve_rate: `[...]` float mean solver success on each proposed task (e.g. over n = 8 rollouts).
    Returns:
      float32 array of the same shape. Examples (n = 8): 0/8 -> 0, 8/8 -> 0, 2/8 -> 0.75, 6/8 -> 0.25.
    """
    s = jnp.asarray(solve_rate, jnp.float32)
    return jnp.where((s > 0) & (s < 1), 1.0 - s, 0.0)


def format_aware_reward(role_reward, passable, well_formed):
    """`role_reward` where passable, else -0.5 where well formed, else -1.

    Args:
      role_reward: `[N]` float (proposer: learnability; solver: 1 for a correct answer).
      passable, well_formed: `[N]` bool (passable implies well formed).
    Returns:
      `[N]` float32 rewards.
    """
    role_reward = jnp.asarray(role_reward, jnp.float32)
    return jnp.where(passable, role_reward, jnp.where(well_formed, WRONG_REWARD, FORMAT_ERROR_REWARD))
