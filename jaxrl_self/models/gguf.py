"""GGUF files (llama.cpp's format) -> the NNX `Transformer`, with no torch and no transformers.

A GGUF file holds the hyper-parameters and the tokenizer as metadata and the weights as (often
quantized) tensors. Import:

  1. metadata -> an HF `config.json` dict (`gguf_hf_config`) -> `ModelConfig` through
     `hf_config.model_config_from_hf`, so the same checks apply as for an HF checkpoint;
  2. each tensor is dequantized to float32 with the `gguf` package (Q4_0, Q4_1, Q8_0, F16, F32;
     any other type is an error naming it), renamed to its HF name (`GGUF_TO_HF`), and for
     `attn_q` / `attn_k` the rows are put back in HF order (llama.cpp interleaves the two rotary
     halves of every head, `unpermute_rotary_rows`);
  3. the HF-layout arrays go through `checkpoint_io.tensor_mappings` / `place_params`, the same
     layout conversion and placement as `load_hf_checkpoint` (the stacked layout included).

Supported: `general.architecture == "llama"` (Llama / Mistral / SmolLM files) without rope
scaling. Both logits and greedy generations match `transformers` loading the same file (which
also dequantizes to float32); see tests/test_real_model.py. The tokenizer is built from the same
file by `jaxrl_self.models.gguf_tokenizer`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Optional

import numpy as np
from flax import nnx

from jaxrl_self.models.checkpoint_io import ShardingFor, place_params, tensor_mappings
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.hf_config import CheckpointError, model_config_from_hf

SUPPORTED_ARCHITECTURES = ("llama",)
# GGUF tensor name (with "{i}" for the block) -> HF tensor name.
GGUF_TO_HF = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}
_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")


def _gguf_module():
    try:
        import gguf
    except ImportError:
        raise CheckpointError("reading GGUF files needs the `gguf` package: pip install gguf") from None
    return gguf


def open_gguf(path: str):
    """A `gguf.GGUFReader` over `path` (memory-mapped); CheckpointError if it is missing or not GGUF."""
    gguf = _gguf_module()
    if not os.path.isfile(path):
        raise CheckpointError(f"GGUF file not found: {path!r}")
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable GGUF file ({e})") from None


def metadata(reader, key: str, default=None):
    """The value of metadata field `key` (str, number, bool or list), or `default` when absent."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_hf_config(reader, source: str) -> dict:
    """An HF `config.json` dict (model_type llama) from the file's metadata; token ids included."""
    arch = metadata(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise CheckpointError(f"{source}: GGUF architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    scaling = metadata(reader, f"{arch}.rope.scaling.type")
    names = {t.name for t in reader.tensors}
    if (scaling not in (None, "none")) or "rope_freqs.weight" in names:
        raise CheckpointError(f"{source}: rope scaling in a GGUF file is not supported")

    def required(key: str):
        value = metadata(reader, f"{arch}.{key}")
        if value is None:
            raise CheckpointError(f"{source}: metadata {arch}.{key} is missing")
        return value

    hidden, heads = int(required("embedding_length")), int(required("attention.head_count"))
    vocab = metadata(reader, f"{arch}.vocab_size") or len(metadata(reader, "tokenizer.ggml.tokens", []))
    if not vocab:
        raise CheckpointError(f"{source}: neither {arch}.vocab_size nor tokenizer.ggml.tokens gives the vocabulary size")
    hf = {
        "model_type": "llama",
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": int(required("feed_forward_length")),
        "num_hidden_layers": int(required("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(metadata(reader, f"{arch}.attention.head_count_kv", heads)),
        "head_dim": int(metadata(reader, f"{arch}.rope.dimension_count", hidden // heads)),
        "max_position_embeddings": int(required("context_length")),
        "rms_norm_eps": float(required("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(metadata(reader, f"{arch}.rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_act": "silu",
    }
    for name in ("bos", "eos", "pad"):
        token_id = metadata(reader, f"tokenizer.ggml.{'padding' if name == 'pad' else name}_token_id")
        if token_id is not None:
            hf[f"{name}_token_id"] = int(token_id)
    return hf


def hf_name(gguf_name: str) -> Optional[str]:
    """The HF name of a GGUF tensor ("blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight"), or None."""
    match = _BLOCK.fullmatch(gguf_name)
    if match is None:
        return GGUF_TO_HF.get(gguf_name)
    template = GGUF_TO_HF.get(f"blk.{{i}}.{match.group(2)}")
    return None if template is None else template.format(i=match.group(1))


def unpermute_rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undoes llama.cpp's Q/K row order: `[heads*D, E]` with rows (head, i, half) -> HF's (head, half, i).

    llama.cpp's converter permutes the rows of q_proj / k_proj so that the two rotary halves of
    each head are interleaved (its rope rotates adjacent pairs); HF rotates the halves.
    """
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def dequantize(tensor, source: str) -> np.ndarray:
    """A GGUF tensor as float32 numpy in HF `[out, in]` order (ggml lists dimensions innermost first)."""
    gguf = _gguf_module()
    types = gguf.GGMLQuantizationType
    supported = (types.F32, types.F16, types.Q8_0, types.Q4_0, types.Q4_1)
    if tensor.tensor_type not in supported:
        raise CheckpointError(f"{source}: tensor {tensor.name!r} has type {tensor.tensor_type.name}, which is not supported "
                              f"(supported: {', '.join(t.name for t in supported)})")
    shape = tuple(int(n) for n in reversed(tensor.shape))
    return gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(shape)  # a copy, not the memmap


def load_gguf_weights(reader, path: str, *, dtype: str = "float32", sharding_for: Optional[ShardingFor] = None,
                      scan_layers: bool = False) -> tuple[ModelConfig, nnx.GraphDef, nnx.State, dict]:
    """(config, graphdef, params, hf_config) of the model in a GGUF file, parameters in float32.

    reader: `open_gguf(path)`. dtype: the compute dtype written into the ModelConfig.
    sharding_for, scan_layers: as in `checkpoint_io.load_hf_checkpoint`. hf_config is the
    `config.json` dict the file corresponds to (token ids included), kept for export. Raises
    CheckpointError naming the file and tensor.
    """
    hf_config = gguf_hf_config(reader, path)
    config = dataclasses.replace(model_config_from_hf(hf_config, dtype=dtype, source=path), scan_layers=scan_layers)
    tensors = {}
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        if name is None:
            raise CheckpointError(f"{path}: unexpected tensor {tensor.name!r} for a {config.architecture} model")
        tensors[name] = tensor
    mappings = tensor_mappings(config)
    missing = [m.hf_name for m in mappings if m.hf_name not in tensors]
    if missing:
        raise CheckpointError(f"{path}: no tensor for {missing[0]!r} ({len(missing)} missing in all)")

    def read(mapping) -> np.ndarray:
        tensor = tensors[mapping.hf_name]
        array = dequantize(tensor, path)
        if array.shape != mapping.hf_shape:
            raise CheckpointError(f"{path}: tensor {tensor.name!r} has shape {array.shape}, expected {mapping.hf_shape} from its metadata")
        if mapping.hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_heads if mapping.hf_name.endswith("q_proj.weight") else config.num_kv_heads
            array = unpermute_rotary_rows(array, heads)
        return np.ascontiguousarray(mapping.to_ours(array))

    graphdef, params = place_params(config, read, sharding_for)
    return config, graphdef, params, hf_config
