"""Hugging Face `config.json` <-> `ModelConfig` for the supported decoder families.

Supported `model_type`s: llama (Llama 2 / 3 / 3.1 / 3.2, incl. "llama3" rope scaling), mistral,
qwen2 (Qwen2 / Qwen2.5: q/k/v biases), qwen3 (q/k RMSNorm, head_dim independent of hidden size).
Both rope spellings are read: transformers 5 `rope_parameters: {rope_theta, rope_type, ...}` and
the older top-level `rope_theta` + `rope_scaling`. Written configs use the transformers 5 spelling
plus a top-level `rope_theta`, which older transformers versions read.

Sliding-window attention: Mistral's `sliding_window` is implemented as an attention mask (see
`ModelConfig.sliding_window`). Qwen2/Qwen3 per-layer sliding windows (`use_sliding_window: true`)
are rejected with a clear error.
"""
from __future__ import annotations

import json
import os

from jaxrl_self.models.config import ModelConfig

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_ARCHITECTURE_CLASS = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


class CheckpointError(ValueError):
    """A checkpoint directory, file, tensor or config that cannot be used; the message names it."""


def read_hf_config(checkpoint_dir: str) -> dict:
    """The parsed `config.json` of a Hugging Face checkpoint directory."""
    path = os.path.join(checkpoint_dir, "config.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"no config.json in checkpoint directory {checkpoint_dir!r}")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _rope_settings(hf: dict, source: str) -> tuple[float, tuple | None]:
    """(rope_theta, rope_scaling pairs or None) from either spelling of the rope settings."""
    params = dict(hf.get("rope_parameters") or {})
    theta = params.pop("rope_theta", hf.get("rope_theta", 10000.0))
    if not params:
        params = dict(hf.get("rope_scaling") or {})
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    params.pop("type", None)
    rope_type = params.get("rope_type", "default")
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise CheckpointError(f"{source}: rope type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})")
    if rope_type == "default":
        return float(theta), None
    return float(theta), tuple(sorted(params.items()))


def _reject(hf: dict, source: str, key: str, message: str):
    if hf.get(key):
        raise CheckpointError(f"{source}: {key}={hf[key]!r} is not supported ({message})")


def model_config_from_hf(hf: dict, *, dtype: str = "float32", source: str = "config.json") -> ModelConfig:
    """`ModelConfig` from a parsed HF `config.json` dict; `dtype` is the compute dtype to run in.

    Raises CheckpointError naming `source` for an unsupported model_type, activation, bias layout,
    rope type or per-layer sliding window.
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    activation = hf.get("hidden_act", "silu")
    if activation != "silu":
        raise CheckpointError(f"{source}: hidden_act {activation!r} is not supported (only 'silu')")
    _reject(hf, source, "mlp_bias", "MLP projections have no biases here")
    if model_type in ("llama", "qwen3"):
        _reject(hf, source, "attention_bias", "an o_proj bias is not implemented")
    if model_type in ("qwen2", "qwen3"):
        _reject(hf, source, "use_sliding_window", "per-layer sliding windows are not implemented")
    sliding_window = hf.get("sliding_window") if model_type == "mistral" else None

    rope_theta, rope_scaling = _rope_settings(hf, source)
    num_heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
        intermediate_size=hf["intermediate_size"],
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=model_type == "qwen2",
        qk_norm=model_type == "qwen3",
        sliding_window=sliding_window,
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        dtype=dtype,
        architecture=model_type,
    )


def hf_config_from_model_config(config: ModelConfig, extra: dict | None = None) -> dict:
    """A `config.json` dict that transformers loads as the matching `*ForCausalLM` (float32 weights).

    `extra` (e.g. bos_token_id / eos_token_id / pad_token_id) is merged in last.
    """
    model_type = config.architecture
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CheckpointError(
            f"ModelConfig.architecture {model_type!r} cannot be exported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    expected_flags = {"attention_bias": model_type == "qwen2", "qk_norm": model_type == "qwen3"}
    for flag, expected in expected_flags.items():
        if getattr(config, flag) != expected:
            raise CheckpointError(f"a {model_type} checkpoint needs {flag}={expected}, but the ModelConfig has {flag}={not expected}")
    if config.sliding_window is not None and model_type != "mistral":
        raise CheckpointError(f"sliding_window is only exportable for mistral, not {model_type}")

    rope_parameters = {"rope_theta": config.rope_theta, "rope_type": "default", **config.rope_scaling_dict()}
    hf = {
        "architectures": [_ARCHITECTURE_CLASS[model_type]],
        "model_type": model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": config.tie_word_embeddings,
        "rope_parameters": rope_parameters,
        "rope_theta": config.rope_theta,
        "attention_dropout": 0.0,
        "dtype": "float32",
    }
    if model_type in ("llama", "qwen3"):
        hf["attention_bias"] = False
    if model_type == "llama":
        hf["mlp_bias"] = False
    if model_type == "mistral":
        hf["sliding_window"] = config.sliding_window
    if model_type in ("qwen2", "qwen3"):
        hf["use_sliding_window"] = False
        hf["sliding_window"] = None
    hf.update(extra or {})
    return hf
