"""The one table that maps logical axis names to mesh axes (MaxText style).

Model parameters carry logical names in their `logical_axes` metadata (`models/transformer.py`);
activations and batches use the names below as well. A logical name maps to a mesh axis, a
tuple of mesh axes, or None (replicated). Nothing else in the library decides a sharding.
"""
from __future__ import annotations

from collections.abc import Sequence

from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    # batches, activations and the KV cache
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("cache_length", None),
)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=LOGICAL_AXIS_RULES) -> P:
    """The `PartitionSpec` of an array of `shape` whose dimensions have the logical names `logical_axes`.

    A dimension stays replicated (None) when its name has no rule, when its size is not divisible
    by the product of its mesh axes' sizes (e.g. 2 kv heads on tensor=4), or when one of those mesh
    axes already shards an earlier dimension. Trailing replicated dimensions are dropped from the
    spec. Raises ValueError for a name missing from `rules`.
    """
    table = dict(rules)
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match the array shape {tuple(shape)}")
    used: set[str] = set()
    spec = []
    for name, size in zip(logical_axes, shape):
        if name is not None and name not in table:
            raise ValueError(f"logical axis {name!r} has no rule in {[n for n, _ in rules]}")
        target = table.get(name) if name is not None else None
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        axes = tuple(a for a in axes if mesh.shape[a] > 1)  # size-1 axes shard nothing
        ways = 1
        for axis in axes:
            ways *= mesh.shape[axis]
        if not axes or size % ways or used.intersection(axes):
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    while spec and spec[-1] is None:  # the form jit gives its outputs: equal specs, no recompilation
        spec.pop()
    return P(*spec)
