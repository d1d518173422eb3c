"""Splash attention: the Pallas TPU flash-attention kernel, for training passes (no KV cache).

It never materialises the `[B, H, T, T]` score matrix: the kernel walks blocks of queries and keys,
skips the blocks the causal (and sliding-window) mask rules out, and recomputes probabilities in
its own backward kernels. Padding is expressed as segment ids (real tokens 1, padding 0), so a real
query attends only to real keys. On a mesh the kernel runs per chip under `shard_map`: rows over
data+fsdp and heads over tensor, as the activation rules place them. Off TPU it runs in Pallas
interpret mode (slow; for tests). docs/scaling.md gives its memory effect.

Shapes: B batch, T tokens (a multiple of `BLOCK`), H query heads, K kv heads, D head_dim.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec as P

from jaxrl_self.parallel.rules import current_activation_mesh, logical_to_spec, target_platform

BLOCK = 128  # query/key block of the kernel; T must be a multiple of it


def splash_supported(num_tokens: int) -> bool:
    """Whether a training pass over `num_tokens` tokens can use the kernel (whole blocks only)."""
    return num_tokens % BLOCK == 0


def splash_attention(q, k, v, kv_mask, sliding_window=None):
    """Causal softmax attention through the splash kernel.

    q `[B, T, H, D]`, k/v `[B, T, K, D]` (H a multiple of K: grouped-query attention), kv_mask
    `[B, T]` bool (False for padding) -> `[B, T, H, D]` in q.dtype. Equal to `grouped_attention`
    with the causal + padding (+ sliding window) mask for every real query.
    """
    if not splash_supported(q.shape[1]):
        raise ValueError(f"splash attention needs a sequence length that is a multiple of {BLOCK}, got {q.shape[1]}")
    segments = kv_mask.astype(jnp.int32)
    mesh = current_activation_mesh()
    run = partial(_attend_local, sliding_window=sliding_window, interpret=target_platform() != "tpu")
    if mesh is None or mesh.size == 1:
        return run(q, k, v, segments)
    q_spec = logical_to_spec(("batch", "length", "heads", "head_dim"), q.shape, mesh)
    kv_spec = logical_to_spec(("batch", "length", "kv_heads", "head_dim"), k.shape, mesh)
    heads_split = q_spec[2] if len(q_spec) > 2 else None
    if heads_split is not None and (len(kv_spec) <= 2 or kv_spec[2] != heads_split):
        # kv heads cannot follow the query heads' split: give every query head its own kv head
        k, v = (jnp.repeat(x, q.shape[2] // k.shape[2], axis=2) for x in (k, v))
        kv_spec = q_spec
    rows = P(q_spec[0] if len(q_spec) else None)
    return jax.shard_map(run, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, rows), out_specs=q_spec,
                         check_vma=False)(q, k, v, segments)


def _attend_local(q, k, v, segments, *, sliding_window, interpret):
    """The kernel on one chip's rows and heads: `[b, T, h, D]`, `[b, T, k, D]`, segments `[b, T]`."""
    num_tokens, num_heads, head_dim = q.shape[1], q.shape[2], q.shape[3]
    mask = splash_mask.CausalMask((num_tokens, num_tokens))
    if sliding_window is not None:  # key slot > query slot - W, as the einsum path's mask
        mask = splash_mask.LocalMask((num_tokens, num_tokens), window_size=(sliding_window - 1, 0), offset=0)
    kernel = splash_kernel.make_splash_mha(
        splash_mask.MultiHeadMask([mask] * num_heads), head_shards=1, q_seq_shards=1, interpret=interpret,
        block_sizes=splash_kernel.BlockSizes.get_default())
    to_heads_major = lambda x: jnp.swapaxes(x, 1, 2)  # [b, T, h, D] -> [b, h, T, D]
    q = to_heads_major(q * jnp.asarray(1 / math.sqrt(head_dim), q.dtype))
    ids = splash_kernel.SegmentIds(q=segments, kv=segments)
    out = jax.vmap(kernel)(q, to_heads_major(k), to_heads_major(v), segment_ids=ids)
    return to_heads_major(out)
