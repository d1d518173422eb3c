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
    # parameters; the vocabulary is split over fsdp as well, so that the learner's output head
    # (OUTPUT_HEAD_AXIS_RULES below) computes in the layout the embedding is stored in
    ("vocab", ("fsdp", "tensor")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("layers", None),  # the leading axis of stacked layers (ModelConfig.scan_layers): never split, a scan step reads one layer
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
SAMPLING_AXIS_RULES = tuple((name, {"embed": None, "vocab": "tensor"}.get(name, target)) for name, target in LOGICAL_AXIS_RULES)

# The learner's output projection (`train.policy.token_statistics`): the head as stored (vocabulary
# over fsdp and tensor) and the rows gathered over fsdp, so each chip forms the logits of all its
# data-shard's rows over its slice of the vocabulary and the head's gradient is born sharded. With
# rows split over fsdp instead, each chip would gather the whole `[E, V]` head and form a whole
# float32 `[E, V]` gradient of its rows (0.9 GB for a 152k vocabulary at E=1536).
OUTPUT_HEAD_AXIS_RULES = tuple((name, {"embed": None, "batch": "data"}.get(name, target)) for name, target in LOGICAL_AXIS_RULES)


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=LOGICAL_AXIS_RULES) -> P:
    """The `PartitionSpec` of an array of `shape` whose dimensions have the logical names `logical_axes`.

    A mesh axis that already shards an earlier dimension is left out of a later one's axes; a
    dimension stays replicated (None) when its name has no rule, or when its size is not divisible
    by the product of its remaining mesh axes' sizes (e.g. 2 kv heads on tensor=4). Trailing
    replicated dimensions are dropped from the spec. Raises ValueError for a name missing from `rules`.
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
        axes = tuple(a for a in axes if mesh.shape[a] > 1 and a not in used)  # size-1 axes shard nothing
        ways = 1
        for axis in axes:
            ways *= mesh.shape[axis]
        if not axes or size % ways:
            spec.append(None)
            continue
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else axes)
    while spec and spec[-1] is None:  # the form jit gives its outputs: equal specs, no recompilation
        spec.pop()
    return P(*spec)


_ACTIVATION_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("activation_mesh", default=None)
_PARAMETER_RULES: contextvars.ContextVar[tuple] = contextvars.ContextVar("parameter_rules", default=LOGICAL_AXIS_RULES)


@contextlib.contextmanager
def activation_mesh(mesh: Mesh | None, parameter_rules=LOGICAL_AXIS_RULES):
    """While a step function is traced inside it, `constrain` places activations on `mesh`, and
    `constrain_parameter` keeps weights where they use them in the layout of `parameter_rules`
    (the learner's by default; the sampler passes SAMPLING_AXIS_RULES).

    The step-function factories (`make_rl_update(..., mesh=)`, `make_sampler`, ...) enter it inside
    their jitted bodies, so the mesh is bound when the function is built. None: no constraints.
    """
    token, rules_token = _ACTIVATION_MESH.set(mesh), _PARAMETER_RULES.set(parameter_rules)
    try:
        yield
    finally:
        _ACTIVATION_MESH.reset(token)
        _PARAMETER_RULES.reset(rules_token)


def current_activation_mesh() -> Mesh | None:
    """The mesh bound by the enclosing `activation_mesh`, or None."""
    return _ACTIVATION_MESH.get()


def target_platform() -> str:
    """The platform the program being traced is compiled for: that of the bound mesh's devices
    (a TPU topology compiled ahead of time from a CPU host says "tpu"), else the default backend."""
    mesh = _ACTIVATION_MESH.get()
    return mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules=LOGICAL_AXIS_RULES) -> jax.Array:
    """`x` constrained to the sharding its logical axes give on the `activation_mesh` being traced.

    A no-op outside `activation_mesh` or on a one-device mesh, so model code calls it freely and
    single-device programs are unchanged.
    """
    mesh = _ACTIVATION_MESH.get()
    if mesh is None or mesh.size == 1:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(logical_axes, x.shape, mesh, rules)))


def constrain_parameter(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """A weight `x` constrained, where a layer uses it, to the layout its logical axes give under
    the bound parameter rules. Its gradient then takes that layout where it is formed: each layer's
    gradient is reduce-scattered as the backward pass produces it, instead of being summed whole on
    every chip (inside a scan over layers, the stacked gradient would be whole). A no-op as `constrain`."""
    return constrain(x, logical_axes, _PARAMETER_RULES.get())
