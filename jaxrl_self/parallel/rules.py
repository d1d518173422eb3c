"""The one table that maps logical axis names to mesh axes (MaxText style).

Model parameters carry logical names in their `logical_axes` metadata (`models/transformer.py`);
activations and batches use the names below as well, through `constrain`, which the model calls
at layer boundaries and on attention / MLP intermediates and logits, on the mesh a step function
binds with `activation_mesh`. A logical name maps to a
mesh axis, a tuple of mesh axes, or None (replicated). Nothing else in the library decides a
sharding. The layout and its memory figures are described in docs/scaling.md.
"""
from __future__ import annotations

from collections.abc import Sequence

import contextlib
import contextvars

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    # batches, activations and the KV cache: rows over data and fsdp, so that adding chips on
    # either axis divides activation memory; an activation's hidden dimension is never split
    # (heads / mlp / vocab above split it over tensor where the layer widens)
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("cache_length", None),
    ("activation_embed", None),
)

# The sampler's parameter layout: weights replicated over data and fsdp and split over tensor
# only, so that the decode loop gathers no weight and all-reduces no logits. The learner's
# fsdp-sharded parameters are resharded into it once per RL step.
SAMPLING_AXIS_RULES = tuple((name, None if name == "embed" else target) for name, target in LOGICAL_AXIS_RULES)


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


_ACTIVATION_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("activation_mesh", default=None)


@contextlib.contextmanager
def activation_mesh(mesh: Mesh | None):
    """While a step function is traced inside it, `constrain` places activations on `mesh`.

    The step-function factories (`make_rl_update(..., mesh=)`, `make_sampler`, ...) enter it inside
    their jitted bodies, so the mesh is bound when the function is built. None: no constraints.
    """
    token = _ACTIVATION_MESH.set(mesh)
    try:
        yield
    finally:
        _ACTIVATION_MESH.reset(token)


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules=LOGICAL_AXIS_RULES) -> jax.Array:
    """`x` constrained to the sharding its logical axes give on the `activation_mesh` being traced.

    A no-op outside `activation_mesh` or on a one-device mesh, so model code calls it freely and
    single-device programs are unchanged.
    """
    mesh = _ACTIVATION_MESH.get()
    if mesh is None or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(logical_axes, x.shape, mesh, rules)))
