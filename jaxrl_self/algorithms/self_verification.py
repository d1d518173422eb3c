"""Self-verification inside the policy (LaSeR): the policy's own verdict on a finished solution is
the log-probability `lz` of one reserved token right after the solution's EOS, trained to predict
the verifier's label (docs/algorithms.md#laser-last-token-self-reward).

    r_s = beta_v * (lz - c_ref)                                    (the last-token self-reward)
    L_sr = (1/N) sum_i finished_i * w_i * (r_s,i - label_i)^2      (class-balanced over the batch)

with `w_i = n / (2 n_1)` for a correct and `n / (2 n_0)` for an incorrect finished sample (n finished
samples, n_1 correct, n_0 incorrect; a class with no member gets weight 0). Truncated samples get no
loss. Choose `beta_v` and `c_ref` so that the targets stay improbable: `lz` for a correct answer
aims at `c_ref + 1/beta_v`, which should be a log-probability below about -7.
"""
import jax
import jax.numpy as jnp


def self_reward_scores(lz, *, beta_v, c_ref):
    """Last-token self-rewards `r_s = beta_v * (lz - c_ref)`, `[N] float32`, from `lz [N]` (differentiable)."""
    return beta_v * (jnp.asarray(lz, jnp.float32) - c_ref)


def class_balance_weights(labels, finished):
    """`[N] float32` weights `n / (2 n_c)` of each finished sample's class c (0 for unfinished rows,
    and for both classes' rows when a class has no finished member that class's weight is 0).

    labels `[N]` 0/1 (the verifier's correctness), finished `[N]` bool (ended with EOS).
    """
    labels = jnp.asarray(labels, jnp.float32)
    finished = jnp.asarray(finished, jnp.float32)
    n = jnp.sum(finished)
    n_correct = jnp.sum(finished * labels)
    n_wrong = n - n_correct
    weight = lambda count: jnp.where(count > 0, n / (2.0 * jnp.maximum(count, 1.0)), 0.0)
    return finished * jnp.where(labels > 0.5, weight(n_correct), weight(n_wrong))


def self_reward_loss(lz, labels, finished, *, beta_v, c_ref):
    """LaSeR's class-balanced MSE `L_sr` (module docstring) averaged over all N rows, and metrics.

    Args:
      lz: `[N]` log-prob of the reserved token after each solution's EOS (differentiable).
      labels: `[N]` 0/1 verifier correctness. finished: `[N]` bool, the solution ended with EOS.
    Returns:
      (loss scalar, {"self_verify/mse", "self_verify/accuracy" (balanced, r_s > 0.5 as "correct"),
      "self_verify/score_correct", "self_verify/score_wrong"}: means over finished samples).
    """
    labels = jax.lax.stop_gradient(jnp.asarray(labels, jnp.float32))
    finished_f = jnp.asarray(finished, jnp.float32)
    scores = self_reward_scores(lz, beta_v=beta_v, c_ref=c_ref)
    weights = jax.lax.stop_gradient(class_balance_weights(labels, finished))
    errors = (scores - labels) ** 2
    loss = jnp.sum(weights * errors) / labels.shape[0]
    plain = jax.lax.stop_gradient(scores)
    mean_over = lambda values, rows: jnp.sum(values * rows) / jnp.maximum(jnp.sum(rows), 1.0)
    correct_rows, wrong_rows = finished_f * labels, finished_f * (1.0 - labels)
    said_correct = (plain > 0.5).astype(jnp.float32)
    balanced = 0.5 * (mean_over(said_correct, correct_rows) + mean_over(1.0 - said_correct, wrong_rows))
    metrics = {"self_verify/mse": mean_over(jax.lax.stop_gradient(errors), finished_f), "self_verify/accuracy": balanced,
               "self_verify/score_correct": mean_over(plain, correct_rows), "self_verify/score_wrong": mean_over(plain, wrong_rows)}
    return loss, metrics


def blend_self_advantages(advantages, scores, finished, *, coef, min_std, std_ddof=1):
    """LaSeR's advantage integration: `(1 - coef) * A + coef * A_self`, per prompt group.

    `s = clip(r_s, 0, 1)` for finished samples and 0 for truncated ones; per group, `A_self =
    (s - mean) / std` where the group's std exceeds `min_std`, else `A_self = A` (no self-signal).

    Args:
      advantages: `[B, G]` the verifier's advantages. scores: `[B, G]` self-rewards r_s.
      finished: `[B, G]` bool. coef: the blend weight lambda. min_std: tau.
    Returns:
      `[B, G]` float32 blended advantages (constants).
    """
    advantages = jnp.asarray(advantages, jnp.float32)
    s = jnp.where(finished, jnp.clip(jax.lax.stop_gradient(scores), 0.0, 1.0), 0.0)
    centered = s - jnp.mean(s, axis=-1, keepdims=True)
    std = jnp.sqrt(jnp.sum(centered**2, axis=-1, keepdims=True) / (s.shape[-1] - std_ddof))
    self_advantages = jnp.where(std > min_std, centered / jnp.maximum(std, 1e-12), advantages)
    return jax.lax.stop_gradient((1.0 - coef) * advantages + coef * self_advantages)


def verification_rewards(verdicts, labels):
    """RISE's reward of a verification: `[...] float32`, 1 when the verdict equals the verifier's
    label, -0.5 when it is the other verdict, -1 when there is none (docs/algorithms.md#rise-generated-self-verification).

    verdicts: `[...]` int, 1 = "correct", 0 = "wrong", -1 = no verdict; labels: `[...]` 0/1 (broadcast).
    """
    verdicts, labels = jnp.asarray(verdicts, jnp.int32), jnp.asarray(labels, jnp.int32)
    return jnp.where(verdicts < 0, -1.0, jnp.where(verdicts == labels, 1.0, -0.5)).astype(jnp.float32)
