"""The one decoder-only transformer (Flax NNX): RMSNorm, RoPE, SwiGLU, grouped-query attention, KV cache.

Covers Llama / Mistral (optional sliding window) / Qwen2 (q/k/v biases) / Qwen3 (q/k RMSNorm) through `ModelConfig` flags.
Every parameter carries `logical_axes` metadata (vocab, embed, heads, kv_heads, head_dim, mlp) that
`jaxrl_self.parallel` maps to mesh axes, and activations are constrained by logical names too
(`parallel.rules.constrain`: rows over data+fsdp, heads / MLP columns / vocabulary over tensor,
a no-op outside a mesh context); the model itself never mentions devices. `ModelConfig.remat`
rematerialises each layer in training passes, `ModelConfig.attention` picks the attention kernel.
`ModelConfig.lora` adds LoRA adapters to the projections (`models.lora`, docs/lora.md; their
dropout only in a learner's training pass given a `dropout_key`), and with
its `base_quantization` keeps every projection of the frozen base as llama.cpp blocks
(`models.quantized.QuantizedWeight`), dequantized by `weight` where the layer uses it.

Two layouts of the layers, one layer computation (`DecoderLayer`, run by `Transformer.apply_layers`):
  unrolled (default)   `layers` is a list of L `DecoderLayer`s (state paths `layers.i.<name>`), run
                       by a Python loop: the program holds L copies of the layer;
  stacked              (`ModelConfig.scan_layers`) `layers` is one `DecoderLayer` whose every
                       parameter has a leading layer axis, `[L, ...]` with logical axes
                       ("layers",) + the layer's (state paths `layers.<name>`), run by one
                       `jax.lax.scan` whose step gets layer i's slice: compile time and executable
                       size stay those of one layer. The KV cache is then stacked as well
                       (`KVCache`: `[L, B, K, S, D]` arrays), and the scan carries it and
                       updates layer i's slice in place.
Both build the same initial parameters from the same `nnx.Rngs` (`stack_layers`).

Shapes: B batch, Q query tokens in this call, S key/value slots (= Q without a cache, the cache
length with one), H query heads, K kv heads, D head_dim, E hidden, F mlp, V vocab, L layers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_self.models import lora, quantized
from jaxrl_self.models.attention import attention_implementation, fused_attention, xla_attention
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.kv_cache import KVCache, write_rows
from jaxrl_self.models.rope import apply_rope, inverse_frequencies
from jaxrl_self.models.splash import splash_attention
from jaxrl_self.parallel.rules import LOGICAL_AXIS_RULES, constrain, constrain_parameter, target_platform

ACTIVATION = ("batch", "length", "activation_embed")  # logical axes of a `[B, Q, E]` hidden state
REMAT_POLICIES = {  # ModelConfig.remat -> what the backward pass may keep of a layer's forward
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
# each projection's last input axis, counted from the end of its weight `[*in, *out]`: the axis a
# quantized base's blocks run along (that of a GGUF tensor's blocks: its rows are the outputs)
BLOCK_AXES = {"q_proj": -3, "k_proj": -3, "v_proj": -3, "o_proj": -2, "gate_proj": -2, "up_proj": -2, "down_proj": -2}


def _param(rngs: nnx.Rngs, shape, axes, scale: float) -> nnx.Param:
    value = jax.random.normal(rngs.params(), shape, jnp.float32) * scale
    return nnx.Param(value, logical_axes=axes)


def _ones(shape, axes) -> nnx.Param:
    return nnx.Param(jnp.ones(shape, jnp.float32), logical_axes=axes)


def _zeros(shape, axes) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32), logical_axes=axes)


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def weight(param: nnx.Param | quantized.QuantizedWeight, dtype) -> jax.Array:
    """A matrix parameter's value in `dtype`, held in its stored layout where the layer uses it
    (`parallel.rules.constrain_parameter`; a stacked parameter's slice inside the layer scan drops
    the leading "layers" name). A quantized one is dequantized here, from its blocks so held."""
    if isinstance(param, quantized.QuantizedWeight):
        return param.dequantized(dtype)
    value = param[...]
    axes = param.get_metadata()["logical_axes"]
    return constrain_parameter(value, axes[len(axes) - value.ndim:]).astype(dtype)


def contract(x, w, axes: int = 1, preferred_element_type=None):
    """x `[..., *I]` times w `[*I, *O]`, summed over the `axes` axes I -> `[..., *O]`.

    Compiled for CPU, one 2-D `dot` `[tokens, prod(I)] @ [prod(I), prod(O)]`: XLA:CPU then forms
    the weight gradients without first writing the activations (or their gradients) out
    transposed, as it does for the multi-axis einsum: about 20% less CPU time in a GRPO update
    (docs/results.md#third-pass-2-d-projections-greedy-argmax-chunked-output-head-2026-12-06).
    Elsewhere the einsum, whose named axes the SPMD partitioner shards.
    """
    in_axes, out_axes = w.shape[:axes], w.shape[axes:]
    if target_platform() != "cpu":
        letters = "abcdefghijklmnopqrstuvwxyz"
        i, o = letters[:axes], letters[axes : w.ndim]
        return jnp.einsum(f"...{i},{i}{o}->...{o}", x, w, preferred_element_type=preferred_element_type)
    rows = x.reshape(-1, math.prod(in_axes))
    out = jnp.dot(rows, w.reshape(rows.shape[1], -1), preferred_element_type=preferred_element_type)
    return out.reshape(*x.shape[: x.ndim - axes], *out_axes)


def rms_norm(x: jnp.ndarray, weight: jnp.ndarray, eps: float) -> jnp.ndarray:
    """RMSNorm over the last axis, computed in float32 (as HF does), returned in x.dtype."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (normed * weight.astype(jnp.float32)).astype(x.dtype)


class Attention(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.config = config
        e, h, k, d = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        self.q_proj = _param(rngs, (e, h, d), ("embed", "heads", "head_dim"), 1 / math.sqrt(e))
        self.k_proj = _param(rngs, (e, k, d), ("embed", "kv_heads", "head_dim"), 1 / math.sqrt(e))
        self.v_proj = _param(rngs, (e, k, d), ("embed", "kv_heads", "head_dim"), 1 / math.sqrt(e))
        self.o_proj = _param(rngs, (h, d, e), ("heads", "head_dim", "embed"), 1 / math.sqrt(h * d))
        if config.attention_bias:
            self.q_bias = _zeros((h, d), ("heads", "head_dim"))
            self.k_bias = _zeros((k, d), ("kv_heads", "head_dim"))
            self.v_bias = _zeros((k, d), ("kv_heads", "head_dim"))
        if config.qk_norm:
            self.q_norm = _ones((d,), ("head_dim",))
            self.k_norm = _ones((d,), ("head_dim",))

    def add_adapters(self, config: ModelConfig, rngs: nnx.Rngs):
        """LoRA adapters on the projections `config.lora` targets (`models.lora`)."""
        e, h, k, d = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
        lora.add_adapters(self, config.lora, rngs, {
            "q_proj": ((e,), (h, d), ("embed",), ("heads", "head_dim")),
            "k_proj": ((e,), (k, d), ("embed",), ("kv_heads", "head_dim")),
            "v_proj": ((e,), (k, d), ("embed",), ("kv_heads", "head_dim")),
            "o_proj": ((h, d), (e,), ("heads", "head_dim"), ("embed",))})

    def __call__(self, x, positions, kv_mask, cache_kv, cache_index, dropout_key=None):
        """x `[B, Q, E]`; positions `[B, Q]`; kv_mask `[B, S]` bool; cache_kv None or (k, v) `[B, K, S, D]`;
        dropout_key: this layer's adapter-dropout key in a learner's forward, else None (`lora.adapted`).

        Returns (out `[B, Q, E]`, (k, v) of this layer: the updated cache `[B, K, S, D]`, or this
        call's keys `[B, Q, K, D]`).
        """
        cfg, dtype = self.config, x.dtype
        q = contract(x, weight(self.q_proj, dtype))
        k = contract(x, weight(self.k_proj, dtype))
        v = contract(x, weight(self.v_proj, dtype))
        q = constrain(lora.adapted(self, "q_proj", x, q, 1, dropout_key), ("batch", "length", "heads", "head_dim"))
        k = constrain(lora.adapted(self, "k_proj", x, k, 1, dropout_key), ("batch", "length", "kv_heads", "head_dim"))
        v = constrain(lora.adapted(self, "v_proj", x, v, 1, dropout_key), ("batch", "length", "kv_heads", "head_dim"))
        if cfg.attention_bias:
            q, k, v = q + self.q_bias[...].astype(dtype), k + self.k_bias[...].astype(dtype), v + self.v_bias[...].astype(dtype)
        if cfg.qk_norm:
            q, k = rms_norm(q, self.q_norm[...], cfg.rms_norm_eps), rms_norm(k, self.k_norm[...], cfg.rms_norm_eps)
        inv_freq = inverse_frequencies(cfg)  # a trace-time constant, not a parameter
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)

        num_queries = x.shape[1]
        if cache_kv is None:
            query_slots = jnp.arange(num_queries)
            k_heads, v_heads = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, K, S, D]
        else:
            k, v = k_heads, v_heads = tuple(write_rows(cache, new.astype(cache.dtype), cache_index)
                                            for cache, new in zip(cache_kv, (k, v)))
            query_slots = jnp.asarray(cache_index)[..., None] + jnp.arange(num_queries)  # [Q] or [B, Q]
        key_slots = jnp.arange(k_heads.shape[2])
        causal = key_slots <= query_slots[..., None]  # [Q, S] or [B, Q, S]
        if cfg.sliding_window is not None:
            causal &= key_slots > query_slots[..., None] - cfg.sliding_window
        mask = causal & kv_mask[:, None, :]  # [B, Q, S]
        kernel = attention_implementation(cfg, training_tokens=num_queries if cache_kv is None else None)
        if kernel == "splash":  # training passes only: k, v `[B, S, K, D]`
            out = splash_attention(q, k.astype(dtype), v.astype(dtype), kv_mask, cfg.sliding_window)
        else:
            k_heads, v_heads = k_heads.astype(dtype), v_heads.astype(dtype)
            if kernel == "dot_product":
                out = fused_attention(q, k_heads, v_heads, mask)
            else:
                out = xla_attention(q, k_heads, v_heads, mask, training=cache_kv is None)
        out = constrain(out, ("batch", "length", "heads", "head_dim"))
        projected = lora.adapted(self, "o_proj", out, contract(out, weight(self.o_proj, dtype), 2), 2,
                                 dropout_key)
        return constrain(projected, ACTIVATION), (k, v)


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        e, f = config.hidden_size, config.intermediate_size
        self.gate_proj = _param(rngs, (e, f), ("embed", "mlp"), 1 / math.sqrt(e))
        self.up_proj = _param(rngs, (e, f), ("embed", "mlp"), 1 / math.sqrt(e))
        self.down_proj = _param(rngs, (f, e), ("mlp", "embed"), 1 / math.sqrt(f))

    def add_adapters(self, config: ModelConfig, rngs: nnx.Rngs):
        """LoRA adapters on the projections `config.lora` targets (`models.lora`)."""
        e, f = config.hidden_size, config.intermediate_size
        lora.add_adapters(self, config.lora, rngs, {
            "gate_proj": ((e,), (f,), ("embed",), ("mlp",)),
            "up_proj": ((e,), (f,), ("embed",), ("mlp",)),
            "down_proj": ((f,), (e,), ("mlp",), ("embed",))})

    def __call__(self, x, dropout_key=None):
        """x `[B, Q, E]` -> `[B, Q, E]`; dropout_key as `Attention.__call__`'s."""
        dtype, columns = x.dtype, ("batch", "length", "mlp")
        project = lambda name, x: lora.adapted(self, name, x, contract(x, weight(getattr(self, name), dtype)), 1, dropout_key)
        gate = jax.nn.silu(constrain(project("gate_proj", x), columns))
        hidden = constrain(gate * project("up_proj", x), columns)
        return constrain(project("down_proj", hidden), ACTIVATION)


class DecoderLayer(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.config = config
        self.input_layernorm = _ones((config.hidden_size,), ("embed",))
        self.post_attention_layernorm = _ones((config.hidden_size,), ("embed",))
        self.self_attn = Attention(config, rngs)
        self.mlp = MLP(config, rngs)

    def __call__(self, x, positions, kv_mask, cache_kv, cache_index, dropout_key=None):
        eps = self.config.rms_norm_eps
        attn_out, kv = self.self_attn(rms_norm(x, self.input_layernorm[...], eps), positions, kv_mask, cache_kv, cache_index,
                                      dropout_key)
        x = x + attn_out
        x = x + self.mlp(rms_norm(x, self.post_attention_layernorm[...], eps), dropout_key)
        return constrain(x, ACTIVATION), kv


def stack_layers(layers: list[DecoderLayer]) -> DecoderLayer:
    """One `DecoderLayer` holding the parameters of `layers` stacked: each `[L, ...]`, its logical
    axes ("layers",) + the layer's (the `ModelConfig.scan_layers` layout)."""
    def stack(*params: nnx.Param) -> nnx.Param:
        axes = ("layers",) + params[0].get_metadata()["logical_axes"]
        return params[0].replace(jnp.stack([p[...] for p in params]), logical_axes=axes)

    states = [nnx.state(layer) for layer in layers]
    return nnx.merge(nnx.graphdef(layers[0]), jax.tree.map(stack, *states, is_leaf=_is_variable))


class Transformer(nnx.Module):
    """Decoder-only language model. `__call__` runs a full (training) forward or a cached step."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed_tokens = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"), 0.02)
        layers = [DecoderLayer(config, rngs) for _ in range(config.num_layers)]
        self.norm = _ones((config.hidden_size,), ("embed",))
        if not config.tie_word_embeddings:
            # split over the vocabulary only (not embed): the layout the learner's head computes in
            self.lm_head = _param(rngs, (config.hidden_size, config.vocab_size), (None, "vocab"), 1 / math.sqrt(config.hidden_size))
        if config.lora is not None:  # drawn after the base: a seed gives the same base with or without adapters
            for layer in layers:
                layer.self_attn.add_adapters(config, rngs)
                layer.mlp.add_adapters(config, rngs)
        self.layers = stack_layers(layers) if config.scan_layers else nnx.List(layers)
        if config.lora is not None and config.lora.base_quantization:
            quantize_projections(self, config.lora.base_quantization)

    def hidden_states(self, tokens, positions, kv_mask, cache: Optional[KVCache] = None, cache_index=0, dropout_key=None):
        """Final normed hidden states `[B, Q, E]` and the updated cache (None without a cache).

        tokens/positions `[B, Q] int32`; kv_mask `[B, S] bool` marks key slots that may be attended
        (False for padding); causality is added here. With a cache, this call's keys are written at
        slots `cache_index .. cache_index+Q-1` (an int, or `[B]` int32: each row its own slots) and S
        is the cache length; without one, S == Q.
        dropout_key: a PRNG key for the LoRA adapters' dropout (`config.lora.dropout`) in a learner's
        training pass (no cache), folded with each layer's index i; None (the default): no dropout.
        """
        cfg = self.config
        if cache is not None and dropout_key is not None:
            raise ValueError("dropout_key is for training passes (no KV cache) only")
        x = constrain(self.embed_tokens[...].astype(cfg.compute_dtype)[tokens], ACTIVATION)
        if cache is None:  # a training pass: each layer rematerialised per config.remat
            run_layer = forward = lambda layer, x, key: layer(x, positions, kv_mask, None, 0, key)[0]
            if cfg.remat != "none":  # inside a scan, CSE cannot undo the recomputation: no barrier needed
                # `jax.checkpoint` of a pure function of the layer's state: the state may mix arrays of
                # several traces (a LoRA model's frozen base and its differentiated adapters)
                rematted = jax.checkpoint(lambda graphdef, state, x, key: forward(nnx.merge(graphdef, state), x, key),
                                          policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers, static_argnums=0)
                run_layer = lambda layer, x, key: rematted(*nnx.split(layer), x, key)
            layer_key = lambda i: None if dropout_key is None else jax.random.fold_in(dropout_key, i)  # i traced when stacked
            x = self.apply_layers(lambda layer, x, i: run_layer(layer, x, layer_key(i)), x)
            return rms_norm(x, self.norm[...], cfg.rms_norm_eps), None

        def cached_step(layer, carry, i):
            x, cache = carry
            x, kv = layer(x, positions, kv_mask, cache.layer(i), cache_index)
            return x, cache.update_layer(i, kv)

        x, cache = self.apply_layers(cached_step, (x, cache))
        return rms_norm(x, self.norm[...], cfg.rms_norm_eps), cache

    def apply_layers(self, step, carry):
        """`carry` passed through `step(layer, carry, i)` for the layers i = 0 .. L-1 in order.

        Unrolled: a Python loop over `self.layers`. Stacked (`config.scan_layers`): one
        `jax.lax.scan` over the stacked parameters, step i getting a `DecoderLayer` that holds
        their slice i and i as a traced int32.
        """
        if not self.config.scan_layers:
            for i, layer in enumerate(self.layers):
                carry = step(layer, carry, i)
            return carry
        graphdef, stacked = nnx.split(self.layers)
        body = lambda carry, xs: (step(nnx.merge(graphdef, xs[0]), carry, xs[1]), None)
        return jax.lax.scan(body, carry, (stacked, jnp.arange(self.config.num_layers)))[0]

    def output_head(self):
        """The output projection `[E, V]` (the transposed embedding when tied)."""
        return self.embed_tokens[...].T if self.config.tie_word_embeddings else self.lm_head[...]

    def logits(self, hidden):
        """`[..., E] -> [..., V] float32`."""
        return output_logits(hidden, self.output_head())

    def __call__(self, tokens, positions, kv_mask, cache: Optional[KVCache] = None, cache_index=0, dropout_key=None):
        """Logits `[B, Q, V] float32` and the updated cache (see `hidden_states`)."""
        hidden, cache = self.hidden_states(tokens, positions, kv_mask, cache, cache_index, dropout_key)
        return self.logits(hidden), cache


def cast_matrices(params, dtype):
    """A copy of `params` (an `nnx.State`) with every floating matrix in `dtype`: each parameter of
    rank >= 2 besides a leading "layers" axis (norm scales keep theirs, stacked `[L, E]` ones too).

    The layers cast each matrix to the compute dtype where they use it, so a model whose matrices
    are stored in the compute dtype computes bit-identical results with half the memory in bf16.
    """
    def cast(param: nnx.Variable) -> nnx.Variable:
        x = param[...]
        if isinstance(param, quantized.QuantizedBlocks):  # a quantized base keeps its blocks' storage
            return param.replace(jnp.array(x, copy=True))
        rank = x.ndim - ((param.get_metadata().get("logical_axes") or ())[:1] == ("layers",))
        return param.replace(jnp.array(x, dtype=dtype if jnp.issubdtype(x.dtype, jnp.floating) and rank >= 2 else x.dtype, copy=True))

    return jax.tree.map(cast, params, is_leaf=_is_variable)


def _projections(model: Transformer) -> list[tuple[nnx.Module, str]]:
    """(module, name) of every projection weight of `model` (each layer's, or the stacked layer's)."""
    layers = [model.layers] if model.config.scan_layers else list(model.layers)
    return [(module, name) for layer in layers for module, names in ((layer.self_attn, lora.ATTENTION_TARGETS),
                                                                     (layer.mlp, lora.MLP_TARGETS)) for name in names]


def quantize_projections(model: Transformer, fmt: str) -> None:
    """Replaces every projection weight of `model` by its `quantized.QuantizedWeight` in format `fmt`."""
    for module, name in _projections(model):
        setattr(module, name, quantized.QuantizedWeight(getattr(module, name), fmt, BLOCK_AXES[name]))


def quantized_base(params: nnx.State, config: ModelConfig) -> nnx.State:
    """A loaded base model's params (float, no adapters) with their projections quantized as
    `config.lora.base_quantization` says: the base of a `Transformer(config)` (docs/lora.md#quantized-base)."""
    model = nnx.merge(model_graphdef(dataclasses.replace(config, lora=None)), params)
    quantize_projections(model, config.lora.base_quantization)
    return nnx.state(model)


def dequantized_base(params: nnx.State, config: ModelConfig) -> tuple[nnx.State, ModelConfig]:
    """(params, config) of a model with a quantized base as those of the same model with the
    dequantized float32 weights (for export, which then merges the adapters)."""
    model = nnx.merge(model_graphdef(config), params)
    for module, name in _projections(model):
        blocks = getattr(module, name)
        setattr(module, name, nnx.Param(blocks.dequantized(jnp.float32), logical_axes=blocks.logical_axes()))
    return nnx.state(model), dataclasses.replace(config, lora=dataclasses.replace(config.lora, base_quantization=""))


def init_adapters(config: ModelConfig, seed: int) -> nnx.State:
    """Fresh LoRA adapters (B = 0) for a pretrained base of `config`, drawn from `seed`
    (`models.lora.fresh_adapters`; the model is only built abstractly)."""
    abstract = nnx.state(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(seed))))
    return lora.fresh_adapters(lora.split_adapters(abstract)[0], seed)


def model_graphdef(config: ModelConfig) -> nnx.GraphDef:
    """The graphdef of a `Transformer` with `config`, built without allocating its parameters."""
    return nnx.graphdef(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))


def output_logits(hidden, head, rules=LOGICAL_AXIS_RULES):
    """hidden `[B, ..., E]` times the output projection head `[E, V]` -> float32 logits `[B, ..., V]`,
    placed by `rules` (by default rows over the batch axes and the vocabulary over tensor)."""
    logits = contract(hidden, head.astype(hidden.dtype), preferred_element_type=jnp.float32)
    return constrain(logits, ("batch",) + ("length",) * (logits.ndim - 2) + ("vocab",), rules)


def positions_from_mask(mask: jnp.ndarray) -> jnp.ndarray:
    """Position ids `[B, T] int32` for a left- or right-padded `mask [B, T]`: 0 at the first real token."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)
