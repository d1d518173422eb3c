"""The one decoder-only transformer (Flax NNX): RMSNorm, RoPE, SwiGLU, grouped-query attention, KV cache.

Covers Llama / Mistral (optional sliding window) / Qwen2 (q/k/v biases) / Qwen3 (q/k RMSNorm) through `ModelConfig` flags.
Every parameter carries `logical_axes` metadata (vocab, embed, heads, kv_heads, head_dim, mlp) that
`jaxrl_self.parallel` maps to mesh axes, and activations are constrained by logical names too
(`parallel.rules.constrain`: rows over data+fsdp, heads / MLP columns / vocabulary over tensor,
a no-op outside a mesh context); the model itself never mentions devices. `ModelConfig.remat`
rematerialises each layer in training passes, `ModelConfig.attention` picks the attention kernel.

Shapes: B batch, Q query tokens in this call, S key/value slots (= Q without a cache, the cache
length with one), H query heads, K kv heads, D head_dim, E hidden, F mlp, V vocab.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.rope import apply_rope, inverse_frequencies
from jaxrl_self.parallel.rules import constrain

_MASKED = -1e30
ACTIVATION = ("batch", "length", "activation_embed")  # logical axes of a `[B, Q, E]` hidden state
REMAT_POLICIES = {  # ModelConfig.remat -> what the backward pass may keep of a layer's forward
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class KVCache(NamedTuple):
    """Static-shape key/value cache: one `[B, S, K, D]` array per layer for keys and for values."""

    keys: tuple
    values: tuple

    @staticmethod
    def zeros(config: ModelConfig, batch: int, length: int) -> "KVCache":
        shape = (batch, length, config.num_kv_heads, config.head_dim)
        zeros = tuple(jnp.zeros(shape, config.compute_dtype) for _ in range(config.num_layers))
        return KVCache(zeros, zeros)

    def repeat(self, times: int) -> "KVCache":
        """Each row repeated `times` times consecutively ([B,...] -> [B*times,...]): group sampling."""
        rep = lambda x: jnp.repeat(x, times, axis=0)
        return KVCache(tuple(map(rep, self.keys)), tuple(map(rep, self.values)))


def _param(rngs: nnx.Rngs, shape, axes, scale: float) -> nnx.Param:
    value = jax.random.normal(rngs.params(), shape, jnp.float32) * scale
    return nnx.Param(value, logical_axes=axes)


def _ones(shape, axes) -> nnx.Param:
    return nnx.Param(jnp.ones(shape, jnp.float32), logical_axes=axes)


def _zeros(shape, axes) -> nnx.Param:
    return nnx.Param(jnp.zeros(shape, jnp.float32), logical_axes=axes)


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

    def __call__(self, x, positions, kv_mask, cache_kv, cache_index):
        """x `[B, Q, E]`; positions `[B, Q]`; kv_mask `[B, S]` bool; cache_kv None or (k, v) `[B, S, K, D]`.

        Returns (out `[B, Q, E]`, (k, v) of this layer — the updated cache, or this call's keys).
        """
        cfg, dtype = self.config, x.dtype
        q = constrain(jnp.einsum("bqe,ehd->bqhd", x, self.q_proj[...].astype(dtype)), ("batch", "length", "heads", "head_dim"))
        k = constrain(jnp.einsum("bqe,ekd->bqkd", x, self.k_proj[...].astype(dtype)), ("batch", "length", "kv_heads", "head_dim"))
        v = constrain(jnp.einsum("bqe,ekd->bqkd", x, self.v_proj[...].astype(dtype)), ("batch", "length", "kv_heads", "head_dim"))
        if cfg.attention_bias:
            q, k, v = q + self.q_bias[...].astype(dtype), k + self.k_bias[...].astype(dtype), v + self.v_bias[...].astype(dtype)
        if cfg.qk_norm:
            q, k = rms_norm(q, self.q_norm[...], cfg.rms_norm_eps), rms_norm(k, self.k_norm[...], cfg.rms_norm_eps)
        inv_freq = inverse_frequencies(cfg)  # a trace-time constant, not a parameter
        q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)

        num_queries = x.shape[1]
        if cache_kv is None:
            query_slots = jnp.arange(num_queries)
        else:
            k = jax.lax.dynamic_update_slice_in_dim(cache_kv[0], k.astype(cache_kv[0].dtype), cache_index, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cache_kv[1], v.astype(cache_kv[1].dtype), cache_index, axis=1)
            query_slots = cache_index + jnp.arange(num_queries)
        key_slots = jnp.arange(k.shape[1])
        causal = key_slots[None, :] <= query_slots[:, None]  # [Q, S]
        if cfg.sliding_window is not None:
            causal &= key_slots[None, :] > query_slots[:, None] - cfg.sliding_window
        mask = causal[None] & kv_mask[:, None, :]  # [B, Q, S]
        attend = fused_attention if attention_implementation(cfg) == "dot_product" else grouped_attention
        out = constrain(attend(q, k.astype(dtype), v.astype(dtype), mask), ("batch", "length", "heads", "head_dim"))
        return constrain(jnp.einsum("bqhd,hde->bqe", out, self.o_proj[...].astype(dtype)), ACTIVATION), (k, v)


def attention_implementation(config: ModelConfig) -> str:
    """`config.attention` with "auto" resolved for the default backend: dot_product on GPU, else xla."""
    if config.attention != "auto":
        return config.attention
    return "dot_product" if jax.default_backend() == "gpu" else "xla"


def fused_attention(q, k, v, mask):
    """`grouped_attention` through `jax.nn.dot_product_attention` (cuDNN's fused kernel on GPU where shapes allow).

    Same shapes and result for every query that can attend to some key; fully masked (padding)
    query rows may differ, and never reach a real token.
    """
    return jax.nn.dot_product_attention(q, k, v, mask=mask[:, None])


def grouped_attention(q, k, v, mask):
    """Softmax attention with K kv heads shared by H/K query heads each.

    q `[B, Q, H, D]`, k/v `[B, S, K, D]`, mask `[B, Q, S]` bool -> `[B, Q, H, D]`. Scores in float32.
    """
    b, nq, h, d = q.shape
    groups = h // k.shape[2]
    q = q.reshape(b, nq, k.shape[2], groups, d)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32) / math.sqrt(d)
    scores = jnp.where(mask[:, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, nq, h, d)


class MLP(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        e, f = config.hidden_size, config.intermediate_size
        self.gate_proj = _param(rngs, (e, f), ("embed", "mlp"), 1 / math.sqrt(e))
        self.up_proj = _param(rngs, (e, f), ("embed", "mlp"), 1 / math.sqrt(e))
        self.down_proj = _param(rngs, (f, e), ("mlp", "embed"), 1 / math.sqrt(f))

    def __call__(self, x):
        dtype, columns = x.dtype, ("batch", "length", "mlp")
        gate = jax.nn.silu(constrain(x @ self.gate_proj[...].astype(dtype), columns))
        hidden = constrain(gate * (x @ self.up_proj[...].astype(dtype)), columns)
        return constrain(hidden @ self.down_proj[...].astype(dtype), ACTIVATION)


class DecoderLayer(nnx.Module):
    def __init__(self, config: ModelConfig, rngs: nnx.Rngs):
        self.config = config
        self.input_layernorm = _ones((config.hidden_size,), ("embed",))
        self.post_attention_layernorm = _ones((config.hidden_size,), ("embed",))
        self.self_attn = Attention(config, rngs)
        self.mlp = MLP(config, rngs)

    def __call__(self, x, positions, kv_mask, cache_kv, cache_index):
        eps = self.config.rms_norm_eps
        attn_out, kv = self.self_attn(rms_norm(x, self.input_layernorm[...], eps), positions, kv_mask, cache_kv, cache_index)
        x = x + attn_out
        x = x + self.mlp(rms_norm(x, self.post_attention_layernorm[...], eps))
        return constrain(x, ACTIVATION), kv


class Transformer(nnx.Module):
    """Decoder-only language model. `__call__` runs a full (training) forward or a cached step."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embed_tokens = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"), 0.02)
        self.layers = nnx.List([DecoderLayer(config, rngs) for _ in range(config.num_layers)])
        self.norm = _ones((config.hidden_size,), ("embed",))
        if not config.tie_word_embeddings:
            self.lm_head = _param(rngs, (config.hidden_size, config.vocab_size), ("embed", "vocab"), 1 / math.sqrt(config.hidden_size))

    def hidden_states(self, tokens, positions, kv_mask, cache: Optional[KVCache] = None, cache_index=0):
        """Final normed hidden states `[B, Q, E]` and the updated cache (None without a cache).

        tokens/positions `[B, Q] int32`; kv_mask `[B, S] bool` marks key slots that may be attended
        (False for padding); causality is added here. With a cache, this call's keys are written at
        slots `cache_index .. cache_index+Q-1` and S is the cache length; without one, S == Q.
        """
        x = constrain(self.embed_tokens[...].astype(self.config.compute_dtype)[tokens], ACTIVATION)
        if cache is None:  # a training pass: each layer rematerialised per config.remat
            run_layer = lambda layer, x: layer(x, positions, kv_mask, None, 0)[0]
            if self.config.remat != "none":
                run_layer = nnx.remat(run_layer, policy=REMAT_POLICIES[self.config.remat])
            for layer in self.layers:
                x = run_layer(layer, x)
            return rms_norm(x, self.norm[...], self.config.rms_norm_eps), None
        new_keys, new_values = [], []
        for i, layer in enumerate(self.layers):
            x, (k, v) = layer(x, positions, kv_mask, (cache.keys[i], cache.values[i]), cache_index)
            new_keys.append(k)
            new_values.append(v)
        x = rms_norm(x, self.norm[...], self.config.rms_norm_eps)
        return x, KVCache(tuple(new_keys), tuple(new_values))

    def output_head(self):
        """The output projection `[E, V]` (the transposed embedding when tied)."""
        return self.embed_tokens[...].T if self.config.tie_word_embeddings else self.lm_head[...]

    def logits(self, hidden):
        """`[..., E] -> [..., V] float32`."""
        return output_logits(hidden, self.output_head())

    def __call__(self, tokens, positions, kv_mask, cache: Optional[KVCache] = None, cache_index=0):
        """Logits `[B, Q, V] float32` and the updated cache (see `hidden_states`)."""
        hidden, cache = self.hidden_states(tokens, positions, kv_mask, cache, cache_index)
        return self.logits(hidden), cache


def cast_matrices(params, dtype):
    """A copy of `params` with every floating array of rank >= 2 in `dtype` (norm scales keep theirs).

    The layers cast each matrix to the compute dtype where they use it, so a model whose matrices
    are stored in the compute dtype computes bit-identical results with half the memory in bf16.
    """
    cast = lambda x: jnp.array(x, dtype=dtype if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim >= 2 else x.dtype, copy=True)
    return jax.tree.map(cast, params)


def model_graphdef(config: ModelConfig) -> nnx.GraphDef:
    """The graphdef of a `Transformer` with `config`, built without allocating its parameters."""
    return nnx.graphdef(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))


def output_logits(hidden, head):
    """hidden `[B, ..., E]` times the output projection head `[E, V]` -> float32 logits `[B, ..., V]`,
    rows over the batch axes and the vocabulary over tensor."""
    logits = jnp.einsum("...e,ev->...v", hidden, head.astype(hidden.dtype), preferred_element_type=jnp.float32)
    return constrain(logits, ("batch",) + ("length",) * (logits.ndim - 2) + ("vocab",))


def positions_from_mask(mask: jnp.ndarray) -> jnp.ndarray:
    """Position ids `[B, T] int32` for a left- or right-padded `mask [B, T]`: 0 at the first real token."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)
