"""llama.cpp's block quantization (Q8_0, Q4_0, Q4_1) of a frozen weight, and its dequantization.

A LoRA model's frozen base may be stored quantized (`LoRAConfig.base_quantization`, docs/lora.md#quantized-base):
each projection weight `[*in, *out]` is cut into blocks of `BLOCK` = 32 consecutive values along its
last input axis (the llama.cpp blocks of a GGUF tensor, whose rows are the weight's outputs), and
each block keeps
  q8_0   32 int8 values and one float16 scale d:               w = d * q           (34 bytes / 32 values)
  q4_0   32 4-bit values and one float16 scale d:              w = d * (q - 8)     (18 bytes / 32 values)
  q4_1   32 4-bit values, a float16 scale d and minimum m:     w = d * q + m       (20 bytes / 32 values)
4-bit values are packed two per uint8 as llama.cpp packs them: byte j of a block holds value j in
its low nibble and value j + 16 in its high one.

`quantize` follows the `gguf` package's reference quantizers operation by operation (float32
arithmetic), so quantizing the dequantized values of a GGUF tensor of the same format gives back
its blocks exactly, and `dequantize` computes what `gguf.quants.dequantize` computes, bit for bit
in float32. The arrays keep the weight's axes in place (the block axis shortened), so they carry
the weight's logical axes and shard as it does.
"""
from __future__ import annotations

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_self.parallel.rules import constrain_parameter

FORMATS = ("q8_0", "q4_0", "q4_1")
BLOCK = 32


@flax.struct.dataclass
class Blocks:
    """A weight quantized along its axis `axis` (negative: counted from the end, so it holds for a
    stacked `[L, ...]` weight and for one layer's slice of it) of size K, a multiple of `BLOCK`.

    values: int8 with the weight's shape (q8_0), or uint8 with K/2 on `axis` (q4_0, q4_1: two 4-bit values a byte);
    scales: float16 with K/32 on `axis` (one per block); mins: the same for q4_1, None otherwise.
    """

    values: jax.Array
    scales: jax.Array
    mins: Optional[jax.Array]
    fmt: str = flax.struct.field(pytree_node=False)
    axis: int = flax.struct.field(pytree_node=False)


def misaligned_inputs(hidden_size: int, head_dim: int, intermediate_size: int) -> list[str]:
    """The projections whose blocks' axis (their last input axis) is not a multiple of `BLOCK`,
    each with that axis' size, e.g. ["o_proj (head_dim 16)"]."""
    inputs = {"q/k/v/gate/up_proj (hidden_size": hidden_size, "o_proj (head_dim": head_dim,
              "down_proj (intermediate_size": intermediate_size}
    return [f"{name} {size})" for name, size in inputs.items() if size % BLOCK]


def _split_blocks(x: jax.Array, axis: int, width: int) -> jax.Array:
    """x with its axis `axis` (size n) split into `[n / width, width]` (the new axes at axis, axis + 1)."""
    axis %= x.ndim
    return x.reshape(x.shape[:axis] + (x.shape[axis] // width, width) + x.shape[axis + 1:])


def _round_half_away(x: jax.Array) -> jax.Array:
    """ggml's roundf (the `gguf` package's `np_roundf`): halves away from zero."""
    a = jnp.abs(x)
    floored = jnp.floor(a)
    return jnp.sign(x) * (floored + jnp.floor(2 * (a - floored)))


def _reciprocal(d: jax.Array) -> jax.Array:
    return jnp.where(d == 0, 0.0, 1.0 / jnp.where(d == 0, 1.0, d))


def quantize(w: jax.Array, fmt: str, axis: int) -> Blocks:
    """`w` `[..., K, ...]` (K at `axis`, negative, a multiple of 32; any float dtype) quantized in blocks
    of 32 along `axis` with the `gguf` package's float32 arithmetic -> `Blocks`: values `[..., K, ...]`
    int8 (q8_0) or `[..., K/2, ...]` uint8 (q4_0, q4_1), scales (and q4_1's mins) `[..., K/32, ...]` float16."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown quantization {fmt!r} (known: {FORMATS})")
    if w.shape[axis] % BLOCK:
        raise ValueError(f"axis {axis} of a weight {w.shape} is not a multiple of {BLOCK}")
    x = _split_blocks(jnp.asarray(w, jnp.float32), axis, BLOCK)  # [..., K/32, 32, ...]
    inner = axis % w.ndim + 1  # the axis of the 32 values of a block
    mins = None
    if fmt == "q8_0":
        d = jnp.max(jnp.abs(x), axis=inner, keepdims=True) / 127
        q = _round_half_away(x * _reciprocal(d)).astype(jnp.int8)
    elif fmt == "q4_0":
        largest = jnp.take_along_axis(x, jnp.argmax(jnp.abs(x), axis=inner, keepdims=True), axis=inner)
        d = largest / -8
        q = jnp.clip(jnp.trunc(x * _reciprocal(d) + jnp.float32(8.5)), 0, 15).astype(jnp.uint8)
    else:
        low = jnp.min(x, axis=inner, keepdims=True)
        d = (jnp.max(x, axis=inner, keepdims=True) - low) / 15
        q = jnp.clip(jnp.trunc((x - low) * _reciprocal(d) + jnp.float32(0.5)), 0, 15).astype(jnp.uint8)
        mins = jnp.squeeze(low, inner).astype(jnp.float16)
    if fmt != "q8_0":  # values j and j + 16 of a block share byte j
        first, second = jnp.split(q, 2, axis=inner)
        q = first | (second << 4)
    values = q.reshape(q.shape[:inner - 1] + (-1,) + q.shape[inner + 1:])
    return Blocks(values, jnp.squeeze(d, inner).astype(jnp.float16), mins, fmt=fmt, axis=axis)


def dequantize(blocks: Blocks, dtype=jnp.float32) -> jax.Array:
    """The weight `[..., K, ...]` (K at `blocks.axis`) that `blocks` hold, computed in float32 (as
    `gguf.quants.dequantize` computes it), returned in `dtype`."""
    width = BLOCK if blocks.fmt == "q8_0" else BLOCK // 2
    q = _split_blocks(blocks.values, blocks.axis, width)  # [..., K/32, width, ...]
    inner = blocks.axis % blocks.values.ndim + 1
    if blocks.fmt != "q8_0":
        q = jnp.concatenate([q & 0x0F, q >> 4], axis=inner)
    per_block = lambda a: jnp.expand_dims(a.astype(jnp.float32), inner)
    if blocks.fmt == "q8_0":
        w = q.astype(jnp.float32) * per_block(blocks.scales)
    elif blocks.fmt == "q4_0":
        w = per_block(blocks.scales) * (q.astype(jnp.int8) - jnp.int8(8)).astype(jnp.float32)
    else:
        w = per_block(blocks.scales) * q.astype(jnp.float32) + per_block(blocks.mins)
    return w.reshape(w.shape[:inner - 1] + (-1,) + w.shape[inner + 1:]).astype(dtype)


_quantize = jax.jit(quantize, static_argnums=(1, 2))


class QuantizedBlocks(nnx.Variable):
    """One array of a `QuantizedWeight` (values, scales or mins): frozen (not a `LoRAParam`), and
    kept in its storage dtype (`transformer.cast_matrices` leaves it as it is)."""


class QuantizedWeight(nnx.Module):
    """A frozen weight stored as `Blocks` along its axis `axis`; each array carries the weight's
    logical axes (the block axis keeps its name), so the weight's sharding rules place them."""

    def __init__(self, param: nnx.Variable, fmt: str, axis: int):
        axes = param.get_metadata()["logical_axes"]
        blocks = _quantize(param[...], fmt, axis)
        self.fmt, self.axis = fmt, axis
        self.values = QuantizedBlocks(blocks.values, logical_axes=axes)
        self.scales = QuantizedBlocks(blocks.scales, logical_axes=axes)
        self.mins = None if blocks.mins is None else QuantizedBlocks(blocks.mins, logical_axes=axes)

    def logical_axes(self) -> tuple:
        return self.values.get_metadata()["logical_axes"]

    def dequantized(self, dtype) -> jax.Array:
        """The weight in `dtype`, each array held in its stored layout where it is dequantized
        (`parallel.rules.constrain_parameter`; inside the layer scan a slice drops the "layers" name)."""
        def held(variable):
            value, axes = variable[...], self.logical_axes()
            return constrain_parameter(value, axes[len(axes) - value.ndim:])

        mins = None if self.mins is None else held(self.mins)
        return dequantize(Blocks(held(self.values), held(self.scales), mins, fmt=self.fmt, axis=self.axis), dtype)
