"""Role-conditioned advantage estimation (RAE, docs/games.md#rae): one moving-average baseline per
(game, role), read before it is updated."""

import jax
import jax.numpy as jnp


@jax.jit
def rae_advantages(returns, baselines, alpha: float = 0.95):
    """Advantages of finished games, in completion order, and the baselines after them.

    For game g (in order) and each role p:
        A[g, p] = R[g, p] - b[p]                  (the baseline before game g)
        b[p]   <- alpha * b[p] + (1 - alpha) * R[g, p]

    Args:
      returns: `[G, P]` float returns of G games of one game type, in the order they ended.
      baselines: `[P]` float, that game type's baselines before them.
      alpha: the moving average's decay.
    Returns:
      (advantages `[G, P]` float32, baselines `[P]` float32), constants.
    """
    returns = jax.lax.stop_gradient(jnp.asarray(returns, jnp.float32))

    def game(b, r):
        return alpha * b + (1.0 - alpha) * r, r - b

    baselines, advantages = jax.lax.scan(game, jnp.asarray(baselines, jnp.float32), returns)
    return advantages, baselines
