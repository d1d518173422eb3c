"""Self-certainty and entropy rewards (docs/algorithms.md#intuitor-self-certainty,
docs/algorithms.md#rent-entropy-minimisation)."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.rewards.self_rewards import (
    negative_entropy,
    self_certainty,
    self_certainty_from_logits,
    trajectory_logprob_reward,
)


def test_self_certainty_worked_example():
    probs = np.array([[[0.25] * 4, [0.7, 0.1, 0.1, 0.1]]], np.float32)
    logits = jnp.log(probs)
    per_token = self_certainty_from_logits(logits, jnp.array([[1.0, 0.0]]))
    np.testing.assert_allclose(per_token, [0.0], atol=1e-6)
    np.testing.assert_allclose(self_certainty_from_logits(logits, jnp.array([[0.0, 1.0]])), [0.429813],
                               atol=1e-5)
    mean_logp = jnp.mean(jnp.log(probs), axis=-1)
    np.testing.assert_allclose(self_certainty(mean_logp, jnp.array([[1.0, 1.0]]), 4), [0.429813 / 2],
                               atol=1e-5)


def test_padded_vocab_slots_are_ignored():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 6)).astype(np.float32)
    padded = np.concatenate([logits, np.full((3, 5, 2), -np.inf, np.float32)], axis=-1)
    mask = (rng.random((3, 5)) < 0.7).astype(np.float32)
    reward = self_certainty_from_logits(padded, mask, vocab_size=6)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    kl = -math.log(6) - log_probs.mean(-1)
    expected = (kl * mask).sum(-1) / np.maximum(mask.sum(-1), 1)
    np.testing.assert_allclose(reward, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(reward) >= 0)


def test_entropy_and_logprob_rewards():
    np.testing.assert_allclose(negative_entropy(jnp.array([[math.log(4), 0.0, 9.0]]),
                                                jnp.array([[1.0, 1.0, 0.0]])), [-0.693147], atol=1e-6)
    np.testing.assert_allclose(negative_entropy(jnp.zeros((1, 3)), jnp.zeros((1, 3))), [0.0])
    token_logp = jnp.array([[-0.5, -1.0, jnp.nan]])
    np.testing.assert_allclose(trajectory_logprob_reward(token_logp, jnp.array([[1.0, 1.0, 0.0]])), [-1.5])


def test_rewards_carry_no_gradient():
    logits = jnp.array([[[0.3, -0.2, 1.0]]])
    gradient = jax.grad(lambda z: self_certainty_from_logits(z, jnp.ones((1, 1))).sum())(logits)
    np.testing.assert_array_equal(gradient, 0.0)
    gradient = jax.grad(lambda h: negative_entropy(h, jnp.ones((1, 1))).sum())(jnp.ones((1, 1)))
    np.testing.assert_array_equal(gradient, 0.0)
