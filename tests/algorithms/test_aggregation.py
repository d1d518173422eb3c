"""Masked reductions and aggregation modes (docs/algorithms.md#loss-aggregation-modes, docs/algorithms.md#numerics-and-masking)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.algorithms import aggregation
from jaxrl_self.algorithms.aggregation import AGGREGATION_MODES

# Jitted once per shape: far faster on 2 cores than op-by-op dispatch.
aggregate = jax.jit(aggregation.aggregate, static_argnames=("mode",))
masked_sum = jax.jit(aggregation.masked_sum, static_argnames=("axis", "keepdims"))
masked_mean = jax.jit(aggregation.masked_mean, static_argnames=("axis", "keepdims"))
masked_var = jax.jit(aggregation.masked_var, static_argnames=("axis", "ddof", "keepdims"))

T_CONST = 8.0


def random_batch(seed, num_sequences=6, length=5):
    rng = np.random.default_rng(seed)
    per_token = rng.normal(size=(num_sequences, length)).astype(np.float32)
    lengths = rng.integers(0, length + 1, size=num_sequences)
    lengths[0] = length
    lengths[1] = 0
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.float32)
    return per_token, mask


def numpy_aggregate(per_token, mask, mode, t_const=T_CONST):
    num_sequences = per_token.shape[0]
    sums = (per_token * mask).sum(-1)
    lengths = mask.sum(-1)
    if mode == "token_mean":
        return sums.sum() / max(mask.sum(), 1.0)
    if mode == "seq_mean_token_mean":
        return (sums / np.maximum(lengths, 1.0)).sum() / num_sequences
    if mode == "seq_mean_token_sum_norm":
        return sums.sum() / (num_sequences * t_const)
    return sums.sum() / num_sequences


def test_masked_reductions_match_numpy_and_ignore_nan_in_padding():
    per_token, mask = random_batch(0)
    poisoned = np.where(mask > 0, per_token, np.nan).astype(np.float32)
    valid = mask > 0
    np.testing.assert_allclose(masked_sum(poisoned, mask), per_token[valid].sum(), rtol=1e-6)
    np.testing.assert_allclose(masked_mean(poisoned, mask), per_token[valid].mean(), rtol=1e-6)
    np.testing.assert_allclose(masked_var(poisoned, mask), per_token[valid].var(), rtol=1e-5)
    np.testing.assert_allclose(masked_var(poisoned, mask, ddof=1), per_token[valid].var(ddof=1), rtol=1e-5)
    row_means = masked_mean(poisoned, mask, axis=-1)
    expected = [per_token[i][valid[i]].mean() if valid[i].any() else 0.0 for i in range(len(mask))]
    np.testing.assert_allclose(row_means, expected, rtol=1e-6, atol=1e-7)
    row_vars = masked_var(poisoned, mask, axis=-1, ddof=0)
    expected_vars = [per_token[i][valid[i]].var() if valid[i].any() else 0.0 for i in range(len(mask))]
    np.testing.assert_allclose(row_vars, expected_vars, rtol=1e-5, atol=1e-6)


def test_masked_var_gradient_has_no_nan_from_padding():
    per_token, mask = random_batch(1)
    poisoned = jnp.where(mask > 0, per_token, jnp.nan)
    grad = jax.jit(jax.grad(lambda x: masked_var(x, mask)))(poisoned)
    assert np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[mask == 0] == 0)


def test_algorithms_md_test_vector():
    per_token = np.array([[1.0, 1.0], [4.0, np.nan]], np.float32)
    mask = np.array([[1.0, 1.0], [1.0, 0.0]], np.float32)
    expected = {
        "seq_mean_token_mean": 2.5,
        "token_mean": 2.0,
        "seq_mean_token_sum_norm": 1.5,
        "seq_mean_token_sum": 3.0,
    }
    for mode, value in expected.items():
        np.testing.assert_allclose(aggregate(per_token, mask, mode, t_const=2), value, rtol=1e-7)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregate_matches_numpy(mode):
    for seed in range(3):
        per_token, mask = random_batch(seed)
        np.testing.assert_allclose(
            aggregate(per_token, mask, mode, t_const=T_CONST), numpy_aggregate(per_token, mask, mode), rtol=1e-5
        )


def test_aggregate_accepts_group_axis():
    per_token, mask = random_batch(2)
    for mode in AGGREGATION_MODES:
        flat = aggregate(per_token, mask, mode, t_const=T_CONST)
        grouped = aggregate(per_token.reshape(2, 3, -1), mask.reshape(2, 3, -1), mode, t_const=T_CONST)
        np.testing.assert_allclose(grouped, flat, rtol=1e-6)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_padding_columns_leave_loss_and_gradient_unchanged(mode):
    per_token, mask = random_batch(3)
    padded_tokens = np.concatenate([per_token, np.full((6, 3), 7.0, np.float32)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((6, 3), np.float32)], axis=1)

    def loss(x, m):
        return aggregate(x, m, mode, t_const=T_CONST)

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, grad = value_and_grad(per_token, mask)
    padded_value, padded_grad = value_and_grad(padded_tokens, padded_mask)
    np.testing.assert_allclose(padded_value, value, rtol=1e-6)
    np.testing.assert_allclose(padded_grad[:, :5], grad, rtol=1e-6)
    np.testing.assert_array_equal(padded_grad[:, 5:], 0.0)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_permuting_sequences_leaves_loss_unchanged(mode):
    per_token, mask = random_batch(4)
    perm = np.random.default_rng(0).permutation(6)
    np.testing.assert_allclose(
        aggregate(per_token[perm], mask[perm], mode, t_const=T_CONST),
        aggregate(per_token, mask, mode, t_const=T_CONST),
        rtol=1e-6,
        atol=1e-7,
    )


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_all_pad_rows_contribute_zero_without_nan(mode):
    per_token = np.full((2, 4), np.nan, np.float32)
    mask = np.zeros((2, 4), np.float32)
    value, grad = jax.jit(jax.value_and_grad(lambda x: aggregate(x, mask, mode, t_const=T_CONST)))(
        jnp.asarray(per_token)
    )
    assert float(value) == 0.0
    assert np.all(np.asarray(grad) == 0.0)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_micro_batch_sums_equal_full_batch(mode):
    per_token, mask = random_batch(5, num_sequences=8, length=6)
    num_sequences, num_tokens = 8, mask.sum()

    def full(x):
        return aggregate(x, mask, mode, t_const=T_CONST)

    def accumulated(x):
        parts = [
            aggregate(
                x[i : i + 2], mask[i : i + 2], mode, t_const=T_CONST, num_sequences=num_sequences, num_tokens=num_tokens
            )
            for i in range(0, 8, 2)
        ]
        return sum(parts)

    full_value, full_grad = jax.jit(jax.value_and_grad(full))(per_token)
    acc_value, acc_grad = jax.jit(jax.value_and_grad(accumulated))(per_token)
    np.testing.assert_allclose(acc_value, full_value, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(acc_grad, full_grad, rtol=1e-6, atol=1e-6)


def test_aggregate_rejects_unknown_mode_and_missing_t_const():
    per_token, mask = random_batch(0)
    with pytest.raises(ValueError, match="unknown aggregation mode"):
        aggregation.aggregate(per_token, mask, "mean")
    with pytest.raises(ValueError, match="t_const"):
        aggregation.aggregate(per_token, mask, "seq_mean_token_sum_norm")


def test_aggregate_jits_with_traced_global_counts():
    per_token, mask = random_batch(6)
    jitted = jax.jit(lambda x, m, n, k: aggregation.aggregate(x, m, "token_mean", num_sequences=n, num_tokens=k))
    np.testing.assert_allclose(
        jitted(per_token, mask, 6, mask.sum()), numpy_aggregate(per_token, mask, "token_mean"), rtol=1e-6
    )
