"""Attention kernels of the transformer's layers, all over keys and values in the KV cache's layout.

q `[B, Q, H, D]`; k/v `[B, K, S, D]` (`models.kv_cache`); mask `[B, Q, S]` bool; H query heads share
K kv heads, H/K each. `attention_implementation` picks the kernel for the platform compiled for:
`xla_attention` (XLA: `grouped_attention`'s matmuls; on CPU, training passes take
`causal_block_attention` and decode steps `one_query_attention`), `fused_attention`
(`jax.nn.dot_product_attention`, cuDNN on GPU) or splash attention (`models.splash`, TPU training passes).
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.splash import splash_supported
from jaxrl_self.parallel.rules import target_platform

_MASKED = -1e30
CAUSAL_BLOCK = 32  # query positions per block of `causal_block_attention`


def attention_implementation(config: ModelConfig, training_tokens: Optional[int] = None) -> str:
    """The kernel a call uses: `config.attention`, with "auto" resolved for the platform compiled for.

    training_tokens: T of a training pass (no KV cache), None for a cached step. Splash runs only
    in training passes over whole blocks (`splash_supported`); elsewhere it falls back to xla.
    "auto": splash on TPU where it can run, dot_product on GPU, xla otherwise.
    """
    platform, choice = target_platform(), config.attention
    if choice == "auto":
        choice = {"tpu": "splash", "gpu": "dot_product"}.get(platform, "xla")
    if choice == "splash" and (training_tokens is None or not splash_supported(training_tokens)):
        return "xla"
    return choice


def fused_attention(q, k, v, mask):
    """`grouped_attention` through `jax.nn.dot_product_attention` (cuDNN's fused kernel on GPU where shapes allow);
    k/v `[B, K, S, D]` as there (transposed to the `[B, S, K, D]` that function takes).

    Same shapes and result for every query that can attend to some key; fully masked (padding)
    query rows may differ, and never reach a real token.
    """
    return jax.nn.dot_product_attention(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), mask=mask[:, None])


def xla_attention(q, k, v, mask, training: bool):
    """The `xla` kernel: `grouped_attention`, in the form that is fastest where it is compiled.

    On CPU a training pass (`training`: no KV cache, query i is key slot i) runs in causal blocks
    (`causal_block_attention`) and a decode step's single query as fused products
    (`one_query_attention`); elsewhere, and for other calls, the matmul form.
    """
    if target_platform() == "cpu":
        if training:
            return causal_block_attention(q, k, v, mask)
        if q.shape[1] == 1:
            return one_query_attention(q, k, v, mask)
    return grouped_attention(q, k, v, mask)


def grouped_attention(q, k, v, mask):
    """Softmax attention with K kv heads shared by H/K query heads each, as two batched matmuls.

    q `[B, Q, H, D]`, k/v `[B, K, S, D]` (the cache's layout), mask `[B, Q, S]` bool -> `[B, Q, H, D]`.
    Scores in float32.
    """
    b, nq, h, d = q.shape
    q = q.reshape(b, nq, k.shape[1], h // k.shape[1], d)
    scores = jnp.einsum("bqkgd,bksd->bkgqs", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    scores = jnp.where(mask[:, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgqs,bksd->bqkgd", probs, v).reshape(b, nq, h, d)


def one_query_attention(q, k, v, mask):
    """`grouped_attention` of one query per row as broadcast products and sums instead of matmuls.

    q `[B, 1, H, D]`, k/v `[B, K, S, D]`, mask `[B, 1, S]` -> `[B, 1, H, D]`. On CPU each (row, kv
    head) is an [H/K, D] x [D, S] product, too small for the matmul library; XLA fuses these forms
    into passes over the cache instead (20% less time than the matmuls at 64 rows x 192 slots:
    docs/results.md, "Fifth pass").
    """
    b, _, h, d = q.shape
    q = q.reshape(b, k.shape[1], h // k.shape[1], 1, d).astype(jnp.float32)  # [B, K, G, 1, D]
    scores = jnp.sum(q * k[:, :, None].astype(jnp.float32), axis=-1) / math.sqrt(d)  # [B, K, G, S]
    scores = jnp.where(mask[:, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1)  # float32: the sum over slots accumulates in float32
    out = jnp.sum(probs[..., None] * v[:, :, None].astype(jnp.float32), axis=3)
    return out.astype(v.dtype).reshape(b, 1, h, d)


def causal_block_attention(q, k, v, mask, block: int = CAUSAL_BLOCK):
    """`grouped_attention` of a training pass (query i is key slot i, the mask causal), `block`
    queries at a time over the key slots up to the block's last query only.

    The slots after a block are masked for all its queries, so their scores, softmax and gradients
    are skipped: at T = 128 about 3/8 of the attention's matmul work, which on CPU was a fifth of a
    GRPO update (docs/results.md, "Fifth pass"). Same result for every query that attends to some
    key; a fully masked (padding) query row may differ, as in `fused_attention`.
    q `[B, T, H, D]`, k/v `[B, K, T, D]`, mask `[B, T, T]` -> `[B, T, H, D]`.
    """
    outputs = []
    for start in range(0, q.shape[1], block):
        end = min(start + block, q.shape[1])
        outputs.append(grouped_attention(q[:, start:end], k[:, :, :end], v[:, :, :end], mask[:, start:end, :end]))
    return jnp.concatenate(outputs, axis=1)
