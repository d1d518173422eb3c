"""Grouped-query attention over the `[B, K, S, D]` cache layout, against a NumPy softmax attention:
the matmul form (prefill, training, accelerators) and the one-query form a CPU decode step takes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.models.attention import causal_block_attention, grouped_attention, one_query_attention

B, H, K, S, D = 3, 4, 2, 7, 8


def numpy_attention(q, k, v, mask):
    """q [B, Q, H, D], k/v [B, K, S, D], mask [B, Q, S] -> [B, Q, H, D]; query head h reads kv head h // (H/K)."""
    group = q.shape[2] // k.shape[1]
    out = np.zeros(q.shape)
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            for h in range(q.shape[2]):
                scores = k[b, h // group] @ q[b, i, h] / np.sqrt(q.shape[-1])
                scores = np.where(mask[b, i], scores, -np.inf)
                weights = np.exp(scores - scores.max())
                out[b, i, h] = (weights / weights.sum()) @ v[b, h // group]
    return out


def inputs(num_queries):
    rng = np.random.default_rng(num_queries)
    q = rng.normal(size=(B, num_queries, H, D)).astype(np.float32)
    k, v = (rng.normal(size=(B, K, S, D)).astype(np.float32) for _ in range(2))
    mask = rng.random((B, num_queries, S)) < 0.6
    mask[..., 0] = True  # every query attends to some key
    return q, k, v, mask


@pytest.mark.parametrize("num_queries", [1, 3])
def test_grouped_attention_matches_numpy(num_queries):
    q, k, v, mask = inputs(num_queries)
    np.testing.assert_allclose(jax.jit(grouped_attention)(q, k, v, mask), numpy_attention(q, k, v, mask), atol=1e-5)


def test_one_query_attention_matches_numpy():
    q, k, v, mask = inputs(1)
    np.testing.assert_allclose(jax.jit(one_query_attention)(q, k, v, mask), numpy_attention(q, k, v, mask), atol=1e-5)


@pytest.mark.parametrize("length, block", [(7, 3), (8, 4), (5, 8)])
def test_causal_block_attention_matches_numpy(length, block):
    """Blocks of queries over their key prefixes (the last block shorter, or one block) equal the full
    causal attention for every query with a key to attend to, padding included."""
    rng = np.random.default_rng(length)
    q = rng.normal(size=(B, length, H, D)).astype(np.float32)
    k, v = (rng.normal(size=(B, K, length, D)).astype(np.float32) for _ in range(2))
    kv_mask = np.ones((B, length), bool)
    kv_mask[1, :2] = False  # a left-padded row
    mask = np.tril(np.ones((length, length), bool))[None] & kv_mask[:, None, :]
    real = mask.any(-1)  # queries with some key
    got = jax.jit(causal_block_attention, static_argnums=4)(q, k, v, mask, block)
    np.testing.assert_allclose(np.asarray(got)[real], numpy_attention(q, k, v, mask)[real], atol=1e-5)


def test_one_query_attention_in_bfloat16():
    """A bf16 cache and query (a bf16-compute decode step) give a bf16 result within bf16 rounding
    of the float32 attention of the same values."""
    q, k, v, mask = inputs(1)
    q, k, v = (np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)) for x in (q, k, v))
    got = jax.jit(one_query_attention)(*(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), mask)
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), numpy_attention(q, k, v, mask), atol=1e-2, rtol=1e-2)
