"""DAPO dynamic sampling and overlong shaping (docs/algorithms.md#dynamic-sampling-and-group-filtering,
docs/algorithms.md#overlong-reward-shaping)."""

import jax
import numpy as np
import pytest

from jaxrl_self.algorithms.filtering import group_has_signal, overlong_penalty, select_groups_with_signal


def test_dynamic_sampling_examples():
    rewards = np.array([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0.5, 0.5, 0.5, 0.4]], np.float32)
    np.testing.assert_array_equal(group_has_signal(rewards), [True, False, False, True])
    random_rewards = np.random.default_rng(0).integers(0, 2, size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(group_has_signal(random_rewards), random_rewards.std(1) > 0)


def test_overlong_penalty_examples_and_reference():
    lengths = np.array([16000, 16384, 18432, 20480, 20481])
    actual = overlong_penalty(lengths, max_len=20480, cache_len=4096)
    np.testing.assert_allclose(actual, [0.0, 0.0, -0.5, -1.0, -1.0], rtol=1e-7)
    lengths = np.arange(0, 40)
    reference = np.where(lengths <= 20, 0.0, np.where(lengths <= 30, (20 - lengths) / 10, -1.0))
    np.testing.assert_allclose(overlong_penalty(lengths, max_len=30, cache_len=10), reference, rtol=1e-6)


def test_select_groups_is_stable_fixed_size_and_jittable():
    keep = np.array([False, True, False, True, True, False, True])
    select = jax.jit(select_groups_with_signal, static_argnums=1)
    indices, valid = select(keep, 3)
    np.testing.assert_array_equal(indices, [1, 3, 4])
    np.testing.assert_array_equal(valid, [True, True, True])
    indices, valid = select(np.array([False, True, False, False, True, False, False]), 3)
    np.testing.assert_array_equal(indices[:2], [1, 4])
    np.testing.assert_array_equal(valid, [True, True, False])
    assert indices.dtype == np.int32 and indices.shape == (3,)
    with pytest.raises(ValueError, match="cannot select"):
        select_groups_with_signal(keep, 8)
