"""Token log-probs, entropy, KL estimators and PPO/GSPO/value/DPO losses (docs/algorithms.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.algorithms import kl, losses
from jaxrl_self.algorithms.aggregation import aggregate

# Jitted once per shape: far faster on 2 cores than op-by-op dispatch. Gradients are taken of
# the plain functions inside jitted closures.
clipped_surrogate = jax.jit(losses.clipped_surrogate, static_argnames=("eps_low", "eps_high"))
dpo_loss = jax.jit(losses.dpo_loss, static_argnames=("beta",))
gspo_loss = jax.jit(losses.gspo_loss, static_argnames=("eps_low", "eps_high"))
kl_penalty = jax.jit(kl.kl_penalty, static_argnames=("kind",))
sequence_logprob = jax.jit(losses.sequence_logprob)
token_entropy = jax.jit(losses.token_entropy)
token_logprobs = jax.jit(losses.token_logprobs)
truncated_importance_weight = jax.jit(losses.truncated_importance_weight)
value_loss = jax.jit(losses.value_loss, static_argnames=("clip_eps",))


def numpy_log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_token_logprobs_and_entropy_match_numpy():
    rng = np.random.default_rng(0)
    logits = np.asarray(jnp.asarray(3 * rng.normal(size=(2, 3, 7)), jnp.bfloat16).astype(jnp.float32))
    tokens = rng.integers(0, 7, size=(2, 3)).astype(np.int32)
    log_probs = numpy_log_softmax(logits.astype(np.float64))
    expected_logp = np.take_along_axis(log_probs, tokens[..., None], -1)[..., 0]
    actual = token_logprobs(jnp.asarray(logits, jnp.bfloat16), tokens)
    assert actual.dtype == jnp.float32 and actual.shape == (2, 3)
    np.testing.assert_allclose(actual, expected_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(token_entropy(logits), -(np.exp(log_probs) * log_probs).sum(-1), rtol=1e-5)


def test_entropy_examples_uniform_and_masked_vocabulary():
    np.testing.assert_allclose(token_entropy(jnp.zeros(4)), 1.3863, atol=1e-4)
    masked = jnp.array([0.0, 0.0, -jnp.inf, -jnp.inf])
    np.testing.assert_allclose(token_entropy(masked), np.log(2), rtol=1e-6)
    grad = jax.jit(jax.grad(losses.token_entropy))(masked)
    assert np.all(np.isfinite(grad))


def test_kl_estimator_example():
    logp, ref_logp = np.log(0.5), np.log(0.25)
    np.testing.assert_allclose(kl_penalty(logp, ref_logp, "k1"), 0.6931, atol=1e-4)
    np.testing.assert_allclose(kl_penalty(logp, ref_logp, "k2"), 0.2402, atol=1e-4)
    np.testing.assert_allclose(kl_penalty(logp, ref_logp, "k3"), 0.1931, atol=1e-4)
    with pytest.raises(ValueError, match="unknown KL"):
        kl.kl_penalty(logp, ref_logp, "k4")


def test_kl_estimators_match_numpy_and_clamp():
    rng = np.random.default_rng(1)
    logp, ref_logp = (rng.normal(size=(3, 4)).astype(np.float32) for _ in range(2))
    log_r = ref_logp - logp
    np.testing.assert_allclose(kl_penalty(logp, ref_logp, "k1"), -log_r, rtol=1e-6)
    np.testing.assert_allclose(kl_penalty(logp, ref_logp, "k2"), 0.5 * log_r**2, rtol=1e-6)
    np.testing.assert_allclose(kl_penalty(logp, ref_logp, "k3"), np.exp(log_r) - 1 - log_r, rtol=1e-5, atol=1e-7)
    extreme = kl_penalty(jnp.array([-1000.0]), jnp.array([0.0]), "k3")
    np.testing.assert_allclose(extreme, np.exp(20.0) - 21.0, rtol=1e-6)
    grad_k2 = jax.jit(jax.grad(lambda x: jnp.sum(kl.kl_penalty(x, ref_logp, "k2"))))(logp)
    np.testing.assert_allclose(grad_k2, -log_r, rtol=1e-5)


def test_clipped_surrogate_matches_numpy_and_reports_active_clips():
    rng = np.random.default_rng(2)
    logp, old_logp = (rng.normal(scale=0.3, size=(4, 5)).astype(np.float32) for _ in range(2))
    advantages = rng.normal(size=4).astype(np.float32)
    loss, stats = clipped_surrogate(logp, old_logp, advantages, eps_low=0.2, eps_high=0.28)
    ratio = np.exp(logp - old_logp)
    a = advantages[:, None]
    expected = -np.minimum(ratio * a, np.clip(ratio, 0.8, 1.28) * a)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["ratio"], ratio, rtol=1e-5)
    np.testing.assert_array_equal(stats["clipped_low"], (ratio < 0.8) & (a < 0))
    np.testing.assert_array_equal(stats["clipped_high"], (ratio > 1.28) & (a > 0))
    assert stats["clipped_low"].sum() > 0 and stats["clipped_high"].sum() > 0
    token_advantages = np.broadcast_to(a, (4, 5))
    per_token_loss, _ = clipped_surrogate(logp, old_logp, token_advantages, eps_low=0.2, eps_high=0.28)
    np.testing.assert_allclose(per_token_loss, loss, rtol=1e-6)
    # The gradient vanishes exactly where a clip is active.
    grad = jax.jit(
        jax.grad(lambda x: jnp.sum(losses.clipped_surrogate(x, old_logp, advantages, eps_low=0.2, eps_high=0.28)[0]))
    )(logp)
    active = np.asarray(stats["clipped_low"] + stats["clipped_high"]) > 0
    assert np.all(np.asarray(grad)[active] == 0) and np.all(np.asarray(grad)[~active] != 0)


@pytest.mark.parametrize("mode", ["seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"])
def test_on_policy_gradient_equals_reinforce(mode):
    rng = np.random.default_rng(3)
    logp = rng.normal(size=(4, 6)).astype(np.float32)
    advantages = rng.normal(size=4).astype(np.float32)
    mask = (np.arange(6)[None] < np.array([[6], [2], [0], [4]])).astype(np.float32)

    def surrogate(x):
        per_token, _ = losses.clipped_surrogate(x, x, advantages, eps_low=0.2, eps_high=0.2)
        return aggregate(per_token, mask, mode, t_const=6)

    def reinforce(x):
        return aggregate(-advantages[:, None] * x, mask, mode, t_const=6)

    np.testing.assert_allclose(
        jax.jit(jax.grad(surrogate))(logp), jax.jit(jax.grad(reinforce))(logp), rtol=1e-6, atol=1e-7
    )


def test_surrogate_all_pad_rows_give_zero_and_no_nan():
    mask = jnp.array([[1.0, 1.0], [0.0, 0.0]])
    advantages = jnp.array([1.0, 2.0])

    def loss(x, pad_mask):
        per_token, _ = losses.clipped_surrogate(x, x - 0.01, advantages, eps_low=0.2, eps_high=0.2, mask=pad_mask)
        return aggregate(per_token, mask, "seq_mean_token_mean")

    expected = -0.5 * np.exp(0.01)
    garbage = jnp.array([[0.1, -0.2], [1e30, -1e30]])  # finite garbage at padding, no mask passed
    value, grad = jax.jit(jax.value_and_grad(loss))(garbage, None)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[1] == 0)
    poisoned = jnp.array([[0.1, -0.2], [jnp.nan, jnp.inf]])  # NaN/Inf at padding, mask passed
    value, grad = jax.jit(jax.value_and_grad(loss))(poisoned, mask)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[1] == 0)


def test_gspo_example_is_clipped_with_zero_gradient():
    logp = jnp.array([[0.1, -0.1, 0.3, 0.0]])
    old_logp = jnp.zeros((1, 4))
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0]])

    def loss(x):
        per_sequence, stats = losses.gspo_loss(x, old_logp, jnp.array([1.0]), mask, eps_low=3e-4, eps_high=4e-4)
        return per_sequence[0], stats

    (value, stats), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(logp)
    np.testing.assert_allclose(stats["ratio"], [1.10517], rtol=1e-5)
    np.testing.assert_allclose(value, -1.0004, rtol=1e-6)
    assert float(stats["clipped_high"][0]) == 1.0
    np.testing.assert_array_equal(grad, 0.0)


def test_gspo_matches_numpy_and_on_policy_gradient():
    rng = np.random.default_rng(4)
    logp, old_logp = (rng.normal(scale=0.01, size=(3, 5)).astype(np.float32) for _ in range(2))
    advantages = rng.normal(size=3).astype(np.float32)
    mask = (np.arange(5)[None] < np.array([[5], [3], [0]])).astype(np.float32)
    loss, _ = gspo_loss(logp, old_logp, advantages, mask, eps_low=3e-4, eps_high=4e-4)
    lengths = np.maximum(mask.sum(1), 1)
    s = np.exp(((logp - old_logp) * mask).sum(1) / lengths)
    expected = -np.minimum(s * advantages, np.clip(s, 1 - 3e-4, 1 + 4e-4) * advantages) * (mask.sum(1) > 0)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # On-policy the sequence gradient is -A_i * mean_t grad logp_t (= GRPO seq_mean_token_mean).
    grad = jax.jit(
        jax.grad(lambda x: jnp.sum(losses.gspo_loss(x, x, advantages, mask, eps_low=3e-4, eps_high=4e-4)[0]))
    )(logp)
    np.testing.assert_allclose(grad, -advantages[:, None] * mask / lengths[:, None], rtol=1e-6)


def test_value_loss_example_and_masking():
    per_token = value_loss(
        jnp.array([[0.8, 9.0]]), jnp.array([[0.5, 0.0]]), jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 0.0]]), clip_eps=0.2
    )
    np.testing.assert_allclose(per_token, [[0.045, 0.0]], rtol=1e-6)
    value_grad = jax.jit(jax.grad(lambda v: jnp.sum(losses.value_loss(v, 0.5, 1.0, 1.0, clip_eps=0.2))))
    np.testing.assert_allclose(value_grad(jnp.array(0.8)), 0.0, atol=1e-7)  # the clipped branch is the max, flat in V
    grad = value_grad(jnp.array(0.6))
    np.testing.assert_allclose(grad, -0.4, rtol=1e-6)


def test_dpo_examples_and_metrics():
    zeros = jnp.zeros(1)
    loss, metrics = dpo_loss(zeros, zeros, zeros, zeros, beta=0.1)
    np.testing.assert_allclose(loss, 0.6931, atol=1e-4)
    loss, metrics = dpo_loss(jnp.array([-10.0]), jnp.array([-30.0]), zeros, zeros, beta=0.1)
    np.testing.assert_allclose(loss, 0.1269, atol=1e-4)
    np.testing.assert_allclose(metrics["reward_margin"], 2.0, rtol=1e-6)
    assert float(metrics["accuracy"]) == 1.0


def test_dpo_matches_numpy_with_pair_mask_and_gradient():
    rng = np.random.default_rng(5)
    pc, pr, rc, rr = (rng.normal(scale=5, size=4).astype(np.float32) for _ in range(4))
    pair_mask = np.array([1, 1, 1, 0], bool)
    u = 0.1 * ((pc - rc) - (pr - rr))
    loss, metrics = dpo_loss(pc, pr, rc, rr, beta=0.1, pair_mask=pair_mask)
    np.testing.assert_allclose(loss, np.log1p(np.exp(-u[:3])).mean(), rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], (u[:3] > 0).mean(), rtol=1e-6)
    grad = jax.jit(jax.grad(lambda x: losses.dpo_loss(x, pr, rc, rr, beta=0.1, pair_mask=pair_mask)[0]))(pc)
    expected = -0.1 / (1 + np.exp(u)) / 3 * pair_mask
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-8)


def test_sequence_logprob_and_truncated_weight():
    token_logp = jnp.array([[-1.0, -2.0, jnp.nan], [-0.5, -0.5, -0.5]])
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(sequence_logprob(token_logp, mask), [-3.0, -1.5], rtol=1e-7)
    weights = truncated_importance_weight(jnp.array([0.0, 0.0, 1.0]), jnp.array([0.0, 0.5, 0.0]), cap=2.0)
    np.testing.assert_allclose(weights, [1.0, np.exp(-0.5), 2.0], rtol=1e-6)
