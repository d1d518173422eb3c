"""LoRA adapters on the transformer's projections: `W x + scale * B (A x)`, with the base W frozen.

docs/lora.md describes the feature. Each adapted projection (`TARGETS`) gets an `Adapter`
module next to its weight (state paths `layers.i.self_attn.q_proj_lora.{a,b}`, stacked `[L, ...]`
with `ModelConfig.scan_layers`) whose two matrices are `LoRAParam`s, a subclass of `nnx.Param`:
the optimizer, the checkpoints and the shardings select the adapters by that type
(`split_adapters`), while everything that runs the model (sampler, evaluation, the learner's
forward) merges base and adapters and never folds one into the other. B starts at zero, so a
fresh adapter computes exactly the base model's logits (`x + 0` is exact).

Adapter dropout (`LoRAConfig.dropout` = p, docs/lora.md#adapter-dropout): in the learner's training
forwards only, an adapter computes `scale * B (A dropout(x))` (PEFT's placement; the base path
`W x` never sees it), with one key per forward (`dropout_key`) folded with the layer index
(`transformer.Transformer.hidden_states`) and the projection's name (`adapted`): every adapter of
every layer draws its own mask. A forward without a key (sampler, reference, evaluation) has none.

Shapes follow the projection's own layout: a weight `[*in, *out]` (q_proj `[E, H, D]`, o_proj
`[H, D, E]`, gate/up `[E, F]`, down `[F, E]`) gets A `[*in, r]` and B `[r, *out]`; their logical
axes are the weight's, with None (never sharded) for the rank.
"""
from __future__ import annotations

import dataclasses
import math
import zlib

import jax
import jax.numpy as jnp
from flax import nnx

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
TARGETS = ATTENTION_TARGETS + MLP_TARGETS
RANK_AXIS = None  # the rank axis of A and B: small, replicated
DROPOUT_STREAM = zlib.crc32(b"lora_dropout")  # folded into a step's key: dropout's stream, apart from its other uses


class LoRAParam(nnx.Param):
    """An adapter matrix (A or B): the trainable variables of a LoRA model; the rest is frozen."""


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """rank r (0 = no adapters), alpha (the update is scaled by alpha / r, as PEFT does), dropout
    (p in [0, 1) on the adapters' input, in the learner's forwards only: `adapted`), targets (names from `TARGETS`),
    base_quantization ("" or a `models.quantized.FORMATS` name: every projection of the frozen base,
    adapted or not, stored in llama.cpp blocks and dequantized where a layer uses it; docs/lora.md#quantized-base)."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple = TARGETS
    base_quantization: str = ""

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def adapts(self, name: str) -> bool:
        return self.rank > 0 and name in self.targets


def parse_targets(text: str) -> tuple:
    """"q_proj,v_proj" (or "all") -> ("q_proj", "v_proj"); raises ValueError naming an unknown target."""
    names = TARGETS if text.strip() == "all" else tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise ValueError(f"unknown LoRA target {unknown[0]!r}" if unknown else "no LoRA target given")
    return tuple(name for name in TARGETS if name in names)


class Adapter(nnx.Module):
    """The low-rank update of one projection whose weight has `in_shape` input and `out_shape` output axes."""

    def __init__(self, in_shape: tuple, out_shape: tuple, in_axes: tuple, out_axes: tuple, config: LoRAConfig,
                 rngs: nnx.Rngs):
        self.a = LoRAParam(initial_a(rngs.params(), in_shape + (config.rank,), math.prod(in_shape)),
                           logical_axes=in_axes + (RANK_AXIS,))
        self.b = LoRAParam(jnp.zeros((config.rank,) + out_shape, jnp.float32), logical_axes=(RANK_AXIS,) + out_axes)
        self.scale = config.scale
        self.dropout = config.dropout

    def __call__(self, x: jax.Array, num_in: int) -> jax.Array:
        """`scale * (x A) B` for x `[..., *in]` (its last `num_in` axes the projection's input) -> `[..., *out]`."""
        a, b = self.a[...].astype(x.dtype), self.b[...].astype(x.dtype)
        low = jnp.tensordot(x, a, axes=num_in)  # [..., r]
        return jnp.tensordot(low, b, axes=1) * jnp.asarray(self.scale, x.dtype)


def initial_a(key, shape, fan_in: int) -> jax.Array:
    """PEFT's default A: kaiming_uniform(a=sqrt(5)), i.e. uniform in ±1/sqrt(fan_in), float32."""
    bound = 1 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def fresh_adapters(abstract: nnx.State, seed: int) -> nnx.State:
    """Adapters with the structure of `abstract` (a LoRA model's adapters as shape structs, e.g.
    from `nnx.eval_shape`): each A drawn by `initial_a` from `seed` and its path, each B zero.
    For a pretrained base, without building (or compiling) the base's initialisation."""
    fresh = []
    for path, variable in nnx.to_flat_state(abstract):
        shape, axes = variable.shape, variable.get_metadata()["logical_axes"]
        if path[-1] == "b":
            value = jnp.zeros(shape, jnp.float32)
        else:
            fan_in = math.prod(size for size, name in zip(shape[:-1], axes[:-1]) if name != "layers")
            key = jax.random.fold_in(jax.random.key(seed), zlib.crc32("/".join(map(str, path)).encode()))
            value = initial_a(key, shape, fan_in)
        fresh.append((path, variable.replace(value)))
    return nnx.from_flat_state(fresh)


def add_adapters(module: nnx.Module, config: LoRAConfig, rngs: nnx.Rngs, shapes: dict) -> None:
    """Gives `module` an `Adapter` `<name>_lora` for each projection of `shapes` that `config` targets.

    shapes: {name: (in_shape, out_shape, in_axes, out_axes)} of the module's projections.
    """
    for name, (in_shape, out_shape, in_axes, out_axes) in shapes.items():
        if config is not None and config.adapts(name):
            setattr(module, f"{name}_lora", Adapter(in_shape, out_shape, in_axes, out_axes, config, rngs))


def adapted(module: nnx.Module, name: str, x: jax.Array, y: jax.Array, num_in: int, dropout_key=None) -> jax.Array:
    """`y` (projection `name` of `x`) plus its adapter's update when `module` has one.

    dropout_key: a learner's training forward's key for this layer (None elsewhere): with an
    adapter dropout p > 0 the adapter sees `dropout(x)`, its mask drawn from the key folded with `name`.
    """
    adapter = getattr(module, f"{name}_lora", None)
    if adapter is None:
        return y
    if dropout_key is not None and adapter.dropout > 0:
        x = dropout(x, jax.random.fold_in(dropout_key, zlib.crc32(name.encode())), adapter.dropout)
    return y + adapter(x, num_in).astype(y.dtype)


def dropout(x: jax.Array, key, rate: float) -> jax.Array:
    """Inverted dropout (PEFT's `nn.Dropout`): each entry of `x` kept with probability 1 - rate and
    scaled by 1 / (1 - rate), else 0; same shape and dtype."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


def dropout_key(config, key, step=None):
    """The key of a learner's training forward (docs/lora.md#adapter-dropout): `key` (a typed PRNG
    key) folded with `DROPOUT_STREAM`, then with `step` when given (an int32 scalar, e.g. the
    optimizer step); None when `config` (a `LoRAConfig`, or None without LoRA) has no dropout, so
    that such a learner traces exactly the program it traces without dropout."""
    if config is None or config.dropout == 0:
        return None
    key = jax.random.fold_in(key, DROPOUT_STREAM)
    return key if step is None else jax.random.fold_in(key, step)


def has_adapters(params: nnx.State) -> bool:
    return any(isinstance(v, LoRAParam) for v in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable)))


def split_adapters(params: nnx.State) -> tuple[nnx.State, nnx.State]:
    """(trainable, frozen): a LoRA model's adapters and its base; any other model's params, or a
    tree that is not an `nnx.State` (already the trainable part), and an empty state."""
    if not isinstance(params, nnx.State) or not has_adapters(params):
        return params, nnx.State({})
    return nnx.split_state(params, LoRAParam, ...)


def join_adapters(frozen: nnx.State, trainable: nnx.State) -> nnx.State:
    """The model's params from `split_adapters`' two parts (`trainable` itself when `frozen` is empty)."""
    return nnx.merge_state(frozen, trainable) if len(frozen) else trainable


def merged_weights(params: nnx.State, config: LoRAConfig) -> nnx.State:
    """`params` of a LoRA model as those of the same model without adapters: each adapted weight
    replaced by `W + scale * A B` (computed in float32, stored in W's dtype), the adapters dropped.
    For export; training never merges."""
    flat = dict(nnx.to_flat_state(params))
    merged = []
    for path, variable in flat.items():
        if isinstance(variable, LoRAParam):
            continue
        a_path = path[:-1] + (f"{path[-1]}_lora", "a")
        if a_path in flat:
            a, b = (flat[a_path[:-1] + (part,)][...].astype(jnp.float32) for part in ("a", "b"))
            w = variable[...]
            product = lambda a, b: jnp.tensordot(a, b, axes=1)
            stacked = a.ndim + b.ndim - 2 > w.ndim  # a leading layers axis on all three (scan_layers)
            delta = jax.vmap(product)(a, b) if stacked else product(a, b)
            variable = variable.replace((w.astype(jnp.float32) + config.scale * delta).astype(w.dtype))
        merged.append((path, variable))
    return nnx.from_flat_state(merged)
