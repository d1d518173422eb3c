"""Model hyper-parameters: one dataclass covers the tiny procedural models and Llama/Qwen checkpoints."""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax.numpy as jnp

from jaxrl_self.models.lora import LoRAConfig, parse_targets


REMAT_MODES = ("none", "full", "save_dots")
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "dot_product", "splash")
EXECUTION_FIELDS = ("remat", "attention", "logprob_chunk", "scan_layers")  # how the model runs; a run's config sets them


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder-only transformer hyper-parameters (HF `config.json` names where they exist).

    rope_scaling: None, or a tuple of (key, value) pairs from HF `rope_scaling` (hashable so the
      config can be a static jit argument), e.g. (("rope_type", "llama3"), ("factor", 8.0), ...).
    attention_bias: q/k/v projections carry biases (Qwen2).
    qk_norm: RMSNorm on each head of q and k before RoPE (Qwen3).
    sliding_window: None, or W: a query attends only to the W most recent key slots, itself included
      (Mistral; HF's `kv_idx > q_idx - W` over cache slots, which equals positions for real tokens).
    dtype: compute dtype ("float32" or "bfloat16"); parameters are created and loaded in float32
      (a run's `model.param_dtype` may store the train state's matrices in bfloat16:
      `train.state.init_train_state`).

    How the model runs, not what it computes (none of these is saved into an exported checkpoint's
    architecture; docs/scaling.md gives their memory effects):
    remat: "none" keeps every layer's activations for the backward pass; "full" keeps only each
      layer's input and recomputes the layer (one extra forward); "save_dots" keeps the matmul
      outputs without a batch dimension (the projections) and recomputes the rest.
    attention: "xla" (einsum attention, float32 scores), "dot_product" (`jax.nn.dot_product_attention`:
      cuDNN's fused kernel on GPU where shapes allow, XLA elsewhere), "splash" (the Pallas TPU
      flash-attention kernel in training passes over multiples of 128 tokens, xla elsewhere;
      interpreted, slowly, off TPU), or "auto": splash on TPU, dot_product on GPU, xla elsewhere.
    logprob_chunk: completion positions per chunk of the output projection when computing
      log-probs (0: all at once; -1: "auto", 8 on CPU with a vocabulary of 4096 or more, where it is
      faster, else 0: `train.policy.logprob_chunk_for`); each chunk's `[rows, chunk, vocab]` logits
      are recomputed in the backward pass instead of kept, so no `[rows, T, vocab]` float32 array exists.
    scan_layers: the layers are one `DecoderLayer` whose parameters are stacked `[L, ...]` (logical
      axis "layers", never sharded), run by `jax.lax.scan`: a program holds one layer's code
      whatever the depth, so compile time and executable size do not grow with L. Also sets the
      layout of the parameters (and of the KV cache: `[L, B, K, S, D]` arrays), so it is given when
      a model is built or loaded (`models.pretrained.load_pretrained(..., scan_layers=True)`).
    lora: None, or the LoRA adapters on the projections (`models.lora.LoRAConfig`; docs/lora.md):
      a run's `config.model.lora` adds them to any model; an export merges them away.
    """

    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    rope_theta: float = 10000.0
    rope_scaling: Optional[tuple] = None
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    qk_norm: bool = False
    sliding_window: Optional[int] = None
    max_position_embeddings: int = 512
    dtype: str = "float32"
    architecture: str = "llama"
    remat: str = "none"
    attention: str = "auto"
    logprob_chunk: int = -1
    scan_layers: bool = False
    lora: Optional[LoRAConfig] = None

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})"
            )
        if self.remat not in REMAT_MODES:
            raise ValueError(f"remat must be one of {REMAT_MODES}, got {self.remat!r}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {ATTENTION_IMPLEMENTATIONS}, got {self.attention!r}")
        if self.logprob_chunk < -1:
            raise ValueError(f"logprob_chunk must be >= 0, or -1 (auto), got {self.logprob_chunk}")

    @property
    def layer_matmul_params(self) -> int:
        """Parameters of the layers' projections (q, k, v, o, gate, up, down): each enters one
        multiply-add per token, so a forward costs `2 * layer_matmul_params` FLOPs per token plus
        attention and the output head (`2 * hidden * vocab` per position that forms logits)."""
        e, h, k, d, f = self.hidden_size, self.num_heads, self.num_kv_heads, self.head_dim, self.intermediate_size
        return self.num_layers * (e * h * d + 2 * e * k * d + h * d * e + 3 * e * f)

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)

    def rope_scaling_dict(self) -> dict:
        return dict(self.rope_scaling or ())

    def to_dict(self) -> dict:
        """JSON-serialisable fields (rope_scaling as a dict); inverse of `from_dict`."""
        fields = dataclasses.asdict(self)
        fields["rope_scaling"] = self.rope_scaling_dict() or None
        if self.lora is not None:
            fields["lora"] = {**fields["lora"], "targets": list(self.lora.targets)}
        return fields

    @classmethod
    def from_dict(cls, fields: dict) -> "ModelConfig":
        """Builds a config from `to_dict` output; an unknown key is an error naming it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown} (known: {sorted(known)})")
        fields = dict(fields)
        if fields.get("rope_scaling"):
            fields["rope_scaling"] = tuple(sorted(fields["rope_scaling"].items()))
        else:
            fields["rope_scaling"] = None
        if fields.get("lora"):
            fields["lora"] = LoRAConfig(**{**fields["lora"], "targets": tuple(fields["lora"]["targets"])})
        return cls(**fields)


def with_execution_options(model_config: ModelConfig, config) -> ModelConfig:
    """`model_config` (from scratch or a pretrained checkpoint) running as the run's `config.model`
    says: remat, attention kernel, log-prob chunk, scanned layers (`EXECUTION_FIELDS`; a pretrained
    model's parameters are loaded in the layout `scan_layers` asks for)."""
    return dataclasses.replace(model_config, **{name: config.model[name] for name in EXECUTION_FIELDS},
                               lora=lora_config_from(config))


def lora_config_from(config) -> Optional[LoRAConfig]:
    """The run's `config.model.lora` as a `LoRAConfig`, None when its rank is 0 (no adapters)."""
    lora = config.model.get("lora")
    if not lora or lora.rank == 0:
        return None
    return LoRAConfig(rank=lora.rank, alpha=float(lora.alpha), dropout=float(lora.dropout), targets=parse_targets(lora.targets),
                      base_quantization=lora.get("base_quantization", ""))


def model_config_from(config, vocab_size: int) -> ModelConfig:
    """The ModelConfig of a model trained from scratch, as the run's `config.model` describes it."""
    m = config.model
    return with_execution_options(
        ModelConfig(vocab_size=vocab_size, hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
                    num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, intermediate_size=m.intermediate_size,
                    rope_theta=m.rope_theta, max_position_embeddings=m.max_position_embeddings, dtype=m.dtype), config)
