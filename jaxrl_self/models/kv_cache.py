"""The decoder's static-shape key/value cache (`KVCache`) and how a step writes into it (`write_rows`).

Layout `[B, K, S, D]` per layer (B rows, K kv heads, S slots, D head dim), or one stacked
`[L, B, K, S, D]` array with `ModelConfig.scan_layers`; `parallel.sharding.kv_cache_shardings` places it.
Heads before slots: a decode step's attention reads each (row, kv head)'s slots as one contiguous
`[S, D]` block, so on CPU XLA need not copy the cache into that order at every step (on the 64-row
RL shape those per-step copies were a fifth of the sampler's time: docs/results.md).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrl_self.models.config import ModelConfig


class KVCache(NamedTuple):
    """Static-shape key/value cache, for keys and for values: a tuple of L `[B, K, S, D]` arrays (one
    per layer), or with `ModelConfig.scan_layers` one stacked `[L, B, K, S, D]` array."""

    keys: tuple | jax.Array
    values: tuple | jax.Array

    @staticmethod
    def zeros(config: ModelConfig, batch: int, length: int) -> "KVCache":
        shape = (batch, config.num_kv_heads, length, config.head_dim)
        if config.scan_layers:
            zeros = jnp.zeros((config.num_layers,) + shape, config.compute_dtype)
        else:
            zeros = tuple(jnp.zeros(shape, config.compute_dtype) for _ in range(config.num_layers))
        return KVCache(zeros, zeros)

    @property
    def stacked(self) -> bool:
        return not isinstance(self.keys, tuple)

    def repeat(self, times: int) -> "KVCache":
        """Each row repeated `times` times consecutively ([B,...] -> [B*times,...]): group sampling."""
        rows = 1 if self.stacked else 0
        return jax.tree.map(lambda x: jnp.repeat(x, times, axis=rows), self)

    def grow(self, length: int) -> "KVCache":
        """This cache with zero slots appended up to `length` slots (S -> length; a no-op at S)."""
        slots = 3 if self.stacked else 2
        extra = length - jax.tree.leaves(self)[0].shape[slots]
        widths = lambda x: [(0, extra if axis == slots else 0) for axis in range(x.ndim)]
        return self if extra == 0 else jax.tree.map(lambda x: jnp.pad(x, widths(x)), self)

    def load_rows(self, source: "KVCache", rows, take) -> "KVCache":
        """This cache (B rows of S slots) with, in each row b where `take[b]`, its first S' slots
        replaced by row `rows[b]` of `source` (S' slots): a prefilled prompt moved into a decode slot.

        rows `[B]` int32 indices into source's rows; take `[B]` bool.
        """
        axis = 1 if self.stacked else 0  # rows; slots at axis + 2

        def load(cache, prefilled):
            width = prefilled.shape[axis + 2]
            head = jax.lax.slice_in_dim(cache, 0, width, axis=axis + 2)
            picked = jnp.take(prefilled, rows, axis=axis)
            keep = take.reshape((1,) * axis + take.shape + (1,) * (cache.ndim - axis - 1))
            return jax.lax.dynamic_update_slice_in_dim(cache, jnp.where(keep, picked, head), 0, axis=axis + 2)

        return jax.tree.map(load, self, source)

    def layer(self, i) -> tuple:
        """Layer i's (keys, values), each `[B, K, S, D]`; i may be traced when stacked."""
        if self.stacked:
            return tuple(jax.lax.dynamic_index_in_dim(x, i, keepdims=False) for x in self)
        return self.keys[i], self.values[i]

    def update_layer(self, i, kv: tuple) -> "KVCache":
        """This cache with layer i's (keys, values) replaced by `kv` (in place when stacked)."""
        if self.stacked:
            return KVCache(*(jax.lax.dynamic_update_index_in_dim(x, new, i, 0) for x, new in zip(self, kv)))
        return KVCache(*(xs[:i] + (new,) + xs[i + 1:] for xs, new in zip(self, kv)))


def write_rows(cache, new, cache_index):
    """`cache` `[B, K, S, D]` with `new` `[B, Q, K, D]` (a projection's layout) written at slots
    `cache_index .. +Q-1`: one scalar slot for every row, or `[B]` int32 slots, one per row
    (continuous batching)."""
    new = jnp.swapaxes(new, 1, 2)  # [B, K, Q, D]
    if jnp.ndim(cache_index) == 0:
        return jax.lax.dynamic_update_slice_in_dim(cache, new, cache_index, axis=2)
    return jax.vmap(lambda row, update, slot: jax.lax.dynamic_update_slice_in_dim(row, update, slot, axis=1))(cache, new, cache_index)
