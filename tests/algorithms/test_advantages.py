"""Advantage estimators against the worked examples of docs/algorithms.md and NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.algorithms import advantages as adv

# Jitted once per shape: far faster on 2 cores than op-by-op dispatch.
gae_advantages = jax.jit(adv.gae_advantages, static_argnames=("gamma", "lam"))
group_advantages = jax.jit(adv.group_advantages, static_argnames=("normalize_std", "std_ddof"))
outcome_token_rewards = jax.jit(adv.outcome_token_rewards)
reinforce_pp_advantages = jax.jit(adv.reinforce_pp_advantages, static_argnames=("group_baseline", "group_size"))
rloo_advantages = jax.jit(adv.rloo_advantages)
task_relative_advantages = jax.jit(adv.task_relative_advantages, static_argnames=("num_classes", "std_ddof"))
whiten = jax.jit(adv.whiten)

EXAMPLE_REWARDS = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32)


def prefix_mask(lengths, length):
    return (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


def test_grpo_examples():
    np.testing.assert_allclose(group_advantages(EXAMPLE_REWARDS), [[0.8660, -0.8660, -0.8660, 0.8660]], atol=1e-4)
    np.testing.assert_allclose(group_advantages(EXAMPLE_REWARDS, std_ddof=0), [[1.0, -1.0, -1.0, 1.0]], atol=1e-5)
    np.testing.assert_array_equal(group_advantages(np.ones((1, 4), np.float32)), np.zeros((1, 4)))


def test_dr_grpo_and_reinforce_baseline_examples():
    expected = [[0.5, -0.5, -0.5, 0.5]]
    np.testing.assert_allclose(group_advantages(EXAMPLE_REWARDS, normalize_std=False), expected, rtol=1e-7)


def test_rloo_example():
    np.testing.assert_allclose(rloo_advantages(EXAMPLE_REWARDS), [[2 / 3, -2 / 3, -2 / 3, 2 / 3]], rtol=1e-6)
    with pytest.raises(ValueError, match="group size"):
        rloo_advantages(np.ones((2, 1), np.float32))


def test_group_estimators_match_numpy_on_random_rewards():
    rewards = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    centered = rewards - rewards.mean(-1, keepdims=True)
    for ddof in (0, 1):
        expected = centered / (rewards.std(-1, ddof=ddof, keepdims=True) + 1e-6)
        np.testing.assert_allclose(group_advantages(rewards, std_ddof=ddof), expected, rtol=1e-5)
    leave_one_out = np.stack([rewards[:, i] - np.delete(rewards, i, axis=1).mean(1) for i in range(6)], axis=1)
    np.testing.assert_allclose(rloo_advantages(rewards), leave_one_out, rtol=1e-5, atol=1e-6)


def test_outcome_token_rewards_example():
    mask = np.array([[1, 1, 1, 0]], np.float32)
    old_logp = np.array([[0.2, 0.0, -0.1, 5.0]], np.float32)
    ref_logp = np.zeros_like(old_logp)
    rewards = outcome_token_rewards(np.array([1.0], np.float32), mask, old_logp, ref_logp, 0.1)
    np.testing.assert_allclose(rewards, [[-0.02, 0.0, 1.01, 0.0]], rtol=1e-6, atol=1e-8)


def test_reinforce_pp_kl_example_is_whitened_returns():
    # docs/algorithms.md#reinforce-and-reinforce-baseline: returns [0.99, 1.01, 1.01], then whitened over the 3 valid tokens.
    mask = np.array([[1, 1, 1, 0]], np.float32)
    old_logp = np.array([[0.2, 0.0, -0.1, 0.0]], np.float32)
    advantages = reinforce_pp_advantages(np.array([1.0]), mask, old_logp, np.zeros_like(old_logp), kl_coef=0.1)
    returns = np.array([0.99, 1.01, 1.01])
    expected = (returns - returns.mean()) / np.sqrt(returns.var() + 1e-8)
    np.testing.assert_allclose(np.asarray(advantages)[0, :3], expected, rtol=1e-4)
    assert float(advantages[0, 3]) == 0.0


def test_reinforce_pp_normalisation_example():
    mask = np.ones((4, 1), np.float32)
    zeros = np.zeros((4, 1), np.float32)
    advantages = reinforce_pp_advantages(EXAMPLE_REWARDS[0], mask, zeros, zeros, kl_coef=0.0)
    np.testing.assert_allclose(advantages[:, 0], [1.0, -1.0, -1.0, 1.0], rtol=1e-6)


def numpy_reinforce_pp(rewards, mask, old_logp, ref_logp, kl_coef):
    token_rewards = -kl_coef * (old_logp - ref_logp) * mask
    for i, length in enumerate(mask.sum(1).astype(int)):
        if length:
            token_rewards[i, length - 1] += rewards[i]
    returns = np.cumsum(token_rewards[:, ::-1], axis=1)[:, ::-1]
    valid = returns[mask > 0]
    return np.where(mask > 0, (returns - valid.mean()) / np.sqrt(valid.var() + 1e-8), 0.0)


def test_reinforce_pp_matches_numpy_with_and_without_group_baseline():
    rng = np.random.default_rng(1)
    rewards = rng.normal(size=6).astype(np.float32)
    mask = prefix_mask([5, 3, 1, 0, 4, 2], 5)
    old_logp, ref_logp = (rng.normal(size=(6, 5)).astype(np.float32) for _ in range(2))
    expected = numpy_reinforce_pp(rewards, mask, old_logp, ref_logp, 0.05)
    actual = reinforce_pp_advantages(rewards, mask, old_logp, ref_logp, kl_coef=0.05)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)
    baselined = rewards - rewards.reshape(3, 2).mean(1).repeat(2)
    expected = numpy_reinforce_pp(baselined, mask, old_logp, ref_logp, 0.05)
    actual = reinforce_pp_advantages(rewards, mask, old_logp, ref_logp, kl_coef=0.05, group_baseline=True, group_size=2)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "lam, advantages, returns",
    [(1.0, [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]), (0.95, [0.45125, 0.475, 0.5], [0.95125, 0.975, 1.0])],
)
def test_gae_examples(lam, advantages, returns):
    rewards = np.array([[0.0, 0.0, 1.0, 9.0]], np.float32)
    values = np.array([[0.5, 0.5, 0.5, 9.0]], np.float32)
    mask = np.array([[1, 1, 1, 0]], np.float32)
    actual_advantages, actual_returns = gae_advantages(rewards, values, mask, gamma=1.0, lam=lam)
    np.testing.assert_allclose(actual_advantages, [advantages + [0.0]], rtol=1e-6)
    np.testing.assert_allclose(actual_returns, [returns + [0.0]], rtol=1e-6)


def numpy_gae(rewards, values, mask, gamma, lam):
    advantages = np.zeros_like(rewards)
    for i in range(rewards.shape[0]):
        next_value, next_advantage = 0.0, 0.0
        for t in reversed(range(rewards.shape[1])):
            if mask[i, t]:
                delta = rewards[i, t] + gamma * next_value - values[i, t]
                next_advantage = delta + gamma * lam * next_advantage
                next_value = values[i, t]
                advantages[i, t] = next_advantage
    return advantages, (advantages + values) * mask


def test_gae_matches_numpy_and_whiten_is_masked():
    rng = np.random.default_rng(2)
    rewards, values = (rng.normal(size=(4, 6)).astype(np.float32) for _ in range(2))
    mask = prefix_mask([6, 3, 0, 1], 6)
    expected_advantages, expected_returns = numpy_gae(rewards, values, mask, 0.9, 0.8)
    advantages, returns = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.8)
    np.testing.assert_allclose(advantages, expected_advantages, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns, expected_returns, rtol=1e-5, atol=1e-6)
    white = np.asarray(whiten(advantages, mask))
    assert np.all(white[mask == 0] == 0)
    np.testing.assert_allclose(white[mask > 0].mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(white[mask > 0].std(), 1.0, rtol=1e-4)


def test_task_relative_advantages_constructed_case():
    # Classes: 0 = (propose, ded), 1 = (solve, ded), 2 = (solve, abd); row 6 is invalid padding.
    rewards = np.array([0.75, 0.25, 1.0, 0.0, 0.0, -0.5, 100.0], np.float32)
    class_ids = np.array([0, 0, 1, 1, 1, 2, 2], np.int32)
    valid = np.array([1, 1, 1, 1, 1, 1, 0], bool)
    actual = task_relative_advantages(rewards, class_ids, 6, valid=valid)
    # class 0: mean 0.5, unbiased std sqrt(0.125); class 1: mean 1/3, unbiased std sqrt(1/3); class 2: one row.
    expected = [
        0.25 / (np.sqrt(0.125) + 1e-6),
        -0.25 / (np.sqrt(0.125) + 1e-6),
        (2 / 3) / (np.sqrt(1 / 3) + 1e-6),
        (-1 / 3) / (np.sqrt(1 / 3) + 1e-6),
        (-1 / 3) / (np.sqrt(1 / 3) + 1e-6),
        0.0,
        0.0,
    ]
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    population = task_relative_advantages(rewards[:2], class_ids[:2], 6, std_ddof=0)
    np.testing.assert_allclose(population, [1.0, -1.0], rtol=1e-5)


def test_task_relative_advantages_match_numpy():
    rng = np.random.default_rng(3)
    rewards = rng.normal(size=30).astype(np.float32)
    class_ids = rng.integers(0, 6, size=30).astype(np.int32)
    expected = np.zeros(30)
    for c in range(6):
        rows = class_ids == c
        if rows.sum() > 1:
            expected[rows] = (rewards[rows] - rewards[rows].mean()) / (rewards[rows].std(ddof=1) + 1e-6)
    actual = task_relative_advantages(rewards, class_ids, 6)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_advantages_are_constants():
    rewards = jnp.array([[1.0, 0.0, 2.0]])
    grad = jax.jit(jax.grad(lambda r: jnp.sum(adv.group_advantages(r) * r)))(rewards)
    np.testing.assert_allclose(grad, group_advantages(rewards), rtol=1e-6)
