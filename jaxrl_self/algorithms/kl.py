"""Per-token KL estimators k1, k2, k3 (docs/algorithms.md#kl-to-the-reference-placement-and-estimators)."""

import jax
import jax.numpy as jnp

KL_KINDS = ("k1", "k2", "k3")


def kl_penalty(logp, ref_logp, kind, clamp=20.0):
    """Per-token estimate of KL(pi || pi_ref) from samples of pi, with `log_r = ref_logp - logp`.

    k1 = `-log_r` (unbiased, use in the reward with stop-gradient); k2 = `0.5 log_r^2` (gradient
    of reverse KL as a loss term); k3 = `exp(log_r) - 1 - log_r` (unbiased, >= 0; as a loss term
    its gradient is that of the forward KL(ref || pi)). `log_r` is clamped to `[-clamp, clamp]`.

    Args:
      logp: `[...]` float log-probs of the sampled tokens under the policy (differentiable).
      ref_logp: same shape, under the reference policy (constant).
      kind: one of "k1", "k2", "k3".
    Returns:
      float32 array of logp's shape.
    """
    log_r = jax.lax.stop_gradient(jnp.asarray(ref_logp, jnp.float32)) - jnp.asarray(logp, jnp.float32)
    log_r = jnp.clip(log_r, -clamp, clamp)
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * jnp.square(log_r)
    if kind == "k3":
        return jnp.exp(log_r) - 1.0 - log_r
    raise ValueError(f"unknown KL estimator {kind!r}; expected one of {KL_KINDS}")
