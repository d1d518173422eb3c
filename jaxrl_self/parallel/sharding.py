"""NamedShardings for everything that lives on the mesh: parameters, optimizer state, batches, KV cache.

Parameters carry `logical_axes` metadata (nnx `Param`s); the optimizer's moment trees mirror the
parameters (same Variables, same metadata) and so get the same shardings; every other leaf
(step counters, PRNG keys, the PPO value head) is replicated. Batches are sharded over their
leading (row) dimension by the rule for "batch". `rules.LOGICAL_AXIS_RULES` is the only table.
"""
from __future__ import annotations

from collections import defaultdict

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrl_self.parallel.rules import LOGICAL_AXIS_RULES, logical_to_spec


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def state_shardings(tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """A pytree of `NamedSharding`s with the structure of `tree` (arrays or ShapeDtypeStructs).

    Variables with `logical_axes` metadata are sharded by `rules`; all other leaves replicated.
    Usable as `jax.device_put` / `jax.jit` shardings and for orbax restore targets.
    """
    replicated = NamedSharding(mesh, P())

    def sharding_of(leaf):
        if not _is_variable(leaf):
            return replicated
        axes = leaf.get_metadata().get("logical_axes")
        if axes is None:
            return leaf.replace(replicated)
        return leaf.replace(NamedSharding(mesh, logical_to_spec(axes, leaf.shape, mesh, rules)))

    return jax.tree.map(sharding_of, tree, is_leaf=_is_variable)


def shard_state(tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """`tree` (a `TrainState`, params, ...) placed on `mesh` with `state_shardings`.

    Every process must hold the same values (same seed); each keeps only its devices' shards.
    """
    return jax.device_put(tree, state_shardings(tree, mesh, rules))


def abstract_state(tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """ShapeDtypeStructs of `tree` carrying the shardings for `mesh`: the target of an orbax restore.

    Restoring into it reshards on load, whatever mesh shape the checkpoint was saved from.
    """
    to_struct = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    return jax.tree.map(to_struct, tree, state_shardings(tree, mesh, rules))


def sharding_for(mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """`(logical_axes, shape) -> NamedSharding`: the hook of `models.checkpoint_io.load_hf_checkpoint`."""
    return lambda axes, shape: NamedSharding(mesh, logical_to_spec(axes, shape, mesh, rules))


def batch_sharding(mesh: Mesh, shape, rules=LOGICAL_AXIS_RULES) -> NamedSharding:
    """Sharding of a batch array of (global) `shape` `[N, ...]`: rows over the "batch" mesh axes."""
    return NamedSharding(mesh, logical_to_spec(("batch",) + (None,) * (len(shape) - 1), shape, mesh, rules))


def shard_batch(batch, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """A pytree of host arrays `[n, ...]` (this process's rows) as global arrays sharded by rows.

    With several processes each one passes its own, equally sized slice of the rows (its data
    shard); the global batch has `n * process_count` rows in process order. Raises ValueError
    when the global rows cannot be split evenly over the batch axes with several processes.
    """
    processes = jax.process_count()

    def place(local):
        local = np.asarray(local)
        global_shape = (local.shape[0] * processes,) + local.shape[1:]
        sharding = batch_sharding(mesh, global_shape, rules)
        if processes > 1 and sharding.is_fully_replicated:
            raise ValueError(f"a batch of {global_shape[0]} rows cannot be split over the mesh's batch axes "
                             f"{dict(mesh.shape)} across {processes} processes; make it divisible")
        return jax.make_array_from_process_local_data(sharding, local, global_shape)

    return jax.tree.map(place, batch)


def process_rows(tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """This process's rows of a pytree of global arrays `[N, ...]`, as NumPy `[N / process_count, ...]`.

    The inverse of `shard_batch`: each array is resharded by rows over the batch axes
    (`batch_sharding`), whatever sharding it came with (e.g. a jitted function's output), and the
    rows this process's devices then hold are returned in global row order: the block where
    `shard_batch` put this process's rows, so with a row-aligned computation in between (rows
    `b*G .. b*G+G-1` of the output from row b of the input) row i of what it placed gives rows
    `i*G ..` of its result. On a mesh whose devices are in process order (CPU and GPU hosts),
    process p holds rows `[p*n, (p+1)*n)`. With one process this is the whole array. Raises
    ValueError when the rows cannot be split into one contiguous block per process.
    """
    processes = jax.process_count()
    tree = jax.device_put(tree, jax.tree.map(lambda x: batch_sharding(mesh, x.shape, rules), tree))

    def local_rows(x):
        blocks = {}  # row start -> (row stop, data); replicas along non-batch axes hold the same rows
        for shard in x.addressable_shards:
            start, stop, _ = shard.index[0].indices(x.shape[0])
            blocks.setdefault(start, (stop, shard.data))
        starts = sorted(blocks)
        stops = [blocks[start][0] for start in starts]
        if starts[1:] != stops[:-1] or (stops[-1] - starts[0]) * processes != x.shape[0]:
            raise ValueError(f"this process holds rows {list(zip(starts, stops))} of {x.shape[0]}, not one contiguous "
                             f"block of 1/{processes} of them; make the rows divisible by the mesh's batch axes "
                             f"{dict(mesh.shape)}")
        return np.concatenate([np.asarray(blocks[start][1]) for start in starts])

    return jax.tree.map(local_rows, tree)


def kv_cache_shardings(cache, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """Shardings of a `KVCache` (arrays `[B, K, S, D]`, or stacked `[L, B, K, S, D]` with the layer
    axis unsharded): rows over the batch axes, kv heads over `tensor`.

    For `jax.lax.with_sharding_constraint(cache, ...)` inside a jitted sampler, or `device_put`.
    """
    axes = ("batch", "kv_heads", "cache_length", "head_dim")
    if cache.stacked:
        axes = ("layers",) + axes
    return jax.tree.map(lambda x: NamedSharding(mesh, logical_to_spec(axes, x.shape, mesh, rules)), cache)


def bytes_per_device(tree) -> dict:
    """`{device: bytes}` this process's devices hold of the arrays in `tree` (from `addressable_shards`)."""
    totals = defaultdict(int)
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device] += shard.data.nbytes
    return dict(totals)
