"""Hugging Face safetensors checkpoints <-> the NNX `Transformer`'s (graphdef, params state).

Import (`load_hf_checkpoint`) builds the model abstractly with `nnx.eval_shape` and fills its
parameters one tensor at a time: read (safetensors' numpy API, bf16 included, no torch), cast to
float32, transpose HF's `[out, in]` linear weights, split heads, `jax.device_put` onto the target
sharding. The full model never exists twice in host memory.

With `scan_layers=True` the parameters are placed in the stacked layout (`ModelConfig.scan_layers`,
`models/transformer.py`): the L per-layer HF tensors of one parameter are read, stacked on host
into `[L, ...]` and placed with one `device_put` before the next parameter is read, so the host
holds one parameter's L tensors and their stack at a time. Export slices each stacked parameter
back into the L per-layer HF tensors. `relayout_params` converts a loaded model between layouts.

Export (`export_hf_checkpoint`) writes `config.json`, `model.safetensors` (or size-bounded
`model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json`) and optionally the
tokenizer files, in the layout `transformers.AutoModelForCausalLM.from_pretrained` reads.

Layout per tensor (HF name -> state path, our shape):
  model.embed_tokens.weight [V, E]                     -> embed_tokens [V, E]
  model.layers.i.self_attn.{q,k,v}_proj.weight [H*D, E] -> layers.i.self_attn.{q,k,v}_proj [E, H, D]
  model.layers.i.self_attn.{q,k,v}_proj.bias [H*D]      -> layers.i.self_attn.{q,k,v}_bias [H, D]
  model.layers.i.self_attn.o_proj.weight [E, H*D]       -> layers.i.self_attn.o_proj [H, D, E]
  model.layers.i.self_attn.{q,k}_norm.weight [D]        -> layers.i.self_attn.{q,k}_norm [D]
  model.layers.i.mlp.{gate,up}_proj.weight [F, E]       -> layers.i.mlp.{gate,up}_proj [E, F]
  model.layers.i.mlp.down_proj.weight [E, F]            -> layers.i.mlp.down_proj [F, E]
  model.layers.i.{input,post_attention}_layernorm.weight, model.norm.weight [E] -> same names
  lm_head.weight [V, E]                                 -> lm_head [E, V] (absent when tied)
(H is the kv head count K for k/v.) Stacked layout: `layers.i.<name> [...]` above is slice i of
`layers.<name> [L, ...]`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from typing import Callable, NamedTuple, Optional

import jax
import ml_dtypes
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.hf_config import (
    CheckpointError,
    hf_config_from_model_config,
    model_config_from_hf,
    read_hf_config,
)
from jaxrl_self.models.lora import merged_weights
from jaxrl_self.models.transformer import Transformer, dequantized_base

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Tokenizer files, plus generation_config.json (generate()'s eos ids), copied alongside an export.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "generation_config.json",
)
# Tensors some checkpoints carry that the model recomputes or does not use.
_IGNORED_TENSORS = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")
_CASTABLE_DTYPES = (np.float16, np.float32, np.float64, ml_dtypes.bfloat16)

ShardingFor = Callable[[tuple, tuple], jax.sharding.Sharding]


class TensorMapping(NamedTuple):
    """How one HF tensor becomes one state leaf (and back).

    hf_shape: the shape in the HF file; to_ours: `np.ndarray` HF layout -> our layout;
    to_hf: the inverse. layer: in the stacked layout, the layer i whose tensor is slice i of the
    `[L, ...]` leaf at `path`; None when the tensor is the whole leaf.
    """

    hf_name: str
    path: tuple
    hf_shape: tuple
    to_ours: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]
    layer: Optional[int] = None


def _linear_in_heads(heads: int, head_dim: int):
    """[heads*head_dim, E] (HF out x in) <-> [E, heads, head_dim]."""
    to_ours = lambda w: w.T.reshape(w.shape[1], heads, head_dim)
    to_hf = lambda w: w.reshape(w.shape[0], heads * head_dim).T
    return to_ours, to_hf


def _identity(w):
    return w


def _transpose(w):
    return w.T


def tensor_mappings(config: ModelConfig) -> list[TensorMapping]:
    """Every HF tensor of a checkpoint for `config`, in file order (see the module docstring)."""
    e, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    h, k, d = config.num_heads, config.num_kv_heads, config.head_dim
    maps = [TensorMapping("model.embed_tokens.weight", ("embed_tokens",), (v, e), _identity, _identity)]
    for i in range(config.num_layers):
        hf = f"model.layers.{i}."
        ours, layer = (("layers",), i) if config.scan_layers else (("layers", i), None)
        attn = ours + ("self_attn",)
        for name, heads in (("q", h), ("k", k), ("v", k)):
            maps.append(TensorMapping(f"{hf}self_attn.{name}_proj.weight", attn + (f"{name}_proj",), (heads * d, e),
                                      *_linear_in_heads(heads, d), layer))
            if config.attention_bias:
                maps.append(TensorMapping(f"{hf}self_attn.{name}_proj.bias", attn + (f"{name}_bias",), (heads * d,),
                                          lambda b, heads=heads: b.reshape(heads, d), lambda b: b.reshape(-1), layer))
        maps.append(TensorMapping(f"{hf}self_attn.o_proj.weight", attn + ("o_proj",), (e, h * d),
                                  lambda w: w.T.reshape(h, d, e), lambda w: w.reshape(h * d, e).T, layer))
        if config.qk_norm:
            maps.append(TensorMapping(f"{hf}self_attn.q_norm.weight", attn + ("q_norm",), (d,), _identity, _identity, layer))
            maps.append(TensorMapping(f"{hf}self_attn.k_norm.weight", attn + ("k_norm",), (d,), _identity, _identity, layer))
        for name, shape in (("gate_proj", (f, e)), ("up_proj", (f, e)), ("down_proj", (e, f))):
            maps.append(TensorMapping(f"{hf}mlp.{name}.weight", ours + ("mlp", name), shape, _transpose, _transpose, layer))
        for name in ("input_layernorm", "post_attention_layernorm"):
            maps.append(TensorMapping(f"{hf}{name}.weight", ours + (name,), (e,), _identity, _identity, layer))
    maps.append(TensorMapping("model.norm.weight", ("norm",), (e,), _identity, _identity))
    if not config.tie_word_embeddings:
        maps.append(TensorMapping("lm_head.weight", ("lm_head",), (v, e), _transpose, _transpose))
    return maps


def _weight_map(checkpoint_dir: str) -> dict[str, str]:
    """{tensor name: file name} from the index file, or from the single `model.safetensors`."""
    index_path = os.path.join(checkpoint_dir, INDEX_FILE)
    single_path = os.path.join(checkpoint_dir, SINGLE_FILE)
    if os.path.isfile(index_path):
        try:
            with open(index_path) as f:
                weight_map = json.load(f)["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index_path}: not a safetensors index with a 'weight_map' ({e!r})") from None
        for file_name in sorted(set(weight_map.values())):
            if not os.path.isfile(os.path.join(checkpoint_dir, file_name)):
                raise CheckpointError(f"{index_path} lists weight file {file_name!r}, which is missing from {checkpoint_dir!r}")
        return weight_map
    if os.path.isfile(single_path):
        try:
            with safe_open(single_path, framework="numpy") as f:
                return {name: SINGLE_FILE for name in f.keys()}
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{single_path}: not a readable safetensors file ({e})") from None
    raise CheckpointError(f"no weights in {checkpoint_dir!r}: expected {SINGLE_FILE} or {INDEX_FILE}")


def _check_names(weight_map: dict, mappings: list[TensorMapping], config: ModelConfig, checkpoint_dir: str):
    expected = {m.hf_name for m in mappings}
    ignorable = {"lm_head.weight"} if config.tie_word_embeddings else set()  # some tied checkpoints keep a copy
    unexpected = sorted(n for n in weight_map if n not in expected and n not in ignorable and not _IGNORED_TENSORS.fullmatch(n))
    if unexpected:
        raise CheckpointError(
            f"unexpected tensor {unexpected[0]!r} in {weight_map[unexpected[0]]} of {checkpoint_dir!r} for a "
            f"{config.architecture} model with this config.json ({len(unexpected)} unexpected in all: {unexpected[:5]})"
        )
    missing = [n for n in (m.hf_name for m in mappings) if n not in weight_map]
    if missing:
        raise CheckpointError(
            f"tensor {missing[0]!r} is missing from the weight files of {checkpoint_dir!r} "
            f"({len(missing)} missing in all: {missing[:5]})"
        )


def _read_tensor(handle, mapping: TensorMapping, file_name: str) -> np.ndarray:
    """The tensor in our layout as float32 numpy; shape and dtype checked against the mapping."""
    array = handle.get_tensor(mapping.hf_name)
    if tuple(array.shape) != mapping.hf_shape:
        raise CheckpointError(
            f"tensor {mapping.hf_name!r} in {file_name} has shape {tuple(array.shape)}, expected {mapping.hf_shape} from config.json"
        )
    if array.dtype not in _CASTABLE_DTYPES:
        raise CheckpointError(
            f"tensor {mapping.hf_name!r} in {file_name} has dtype {array.dtype}, which cannot be cast to float32 "
            "(expected float16, bfloat16, float32 or float64)"
        )
    return np.ascontiguousarray(mapping.to_ours(array.astype(np.float32)))


def load_hf_checkpoint(
    checkpoint_dir: str, *, dtype: str = "float32", sharding_for: Optional[ShardingFor] = None,
    scan_layers: bool = False,
) -> tuple[ModelConfig, nnx.GraphDef, nnx.State]:
    """Loads a Llama / Mistral / Qwen2 / Qwen3 HF checkpoint directory.

    dtype: the compute dtype written into the ModelConfig (params are float32 regardless).
    sharding_for: `(logical_axes, shape) -> jax.sharding.Sharding` for each parameter; default
      the first device. scan_layers: the ModelConfig's, and so the parameters' layout (stacked
      `[L, ...]` when True). Returns `(config, graphdef, params)` as `nnx.split(Transformer(config))`
      would, with parameters from the checkpoint. Raises CheckpointError naming the file/tensor.
    """
    config = model_config_from_hf(read_hf_config(checkpoint_dir), dtype=dtype,
                                  source=os.path.join(checkpoint_dir, "config.json"))
    config = dataclasses.replace(config, scan_layers=scan_layers)
    mappings = tensor_mappings(config)
    weight_map = _weight_map(checkpoint_dir)
    _check_names(weight_map, mappings, config, checkpoint_dir)

    with contextlib.ExitStack() as stack:
        handles = {}

        def read(mapping: TensorMapping) -> np.ndarray:
            file_name = weight_map[mapping.hf_name]
            if file_name not in handles:
                try:
                    handles[file_name] = stack.enter_context(
                        safe_open(os.path.join(checkpoint_dir, file_name), framework="numpy"))
                except (SafetensorError, OSError) as e:
                    raise CheckpointError(f"{os.path.join(checkpoint_dir, file_name)}: not a readable safetensors file ({e})") from None
            return _read_tensor(handles[file_name], mapping, file_name)

        graphdef, params = place_params(config, read, sharding_for)
    return config, graphdef, params


def place_params(config: ModelConfig, read: Callable[[TensorMapping], np.ndarray],
                 sharding_for: Optional[ShardingFor] = None) -> tuple[nnx.GraphDef, nnx.State]:
    """`nnx.split(Transformer(config))` with every parameter from `read`, one tensor at a time.

    read: `TensorMapping -> np.ndarray`, the tensor in our layout (`mapping.to_ours` applied),
    float32. sharding_for: `(logical_axes, shape) -> Sharding` per parameter; default the first
    device. The model is built abstractly, so the parameters never exist twice in host memory:
    a stacked parameter (`config.scan_layers`) is read as its L tensors, `np.stack`ed and placed
    before the next one is read.
    """
    groups = {}  # state path -> its tensors: one, or one per layer (in order) for a stacked parameter
    for mapping in tensor_mappings(config):
        groups.setdefault(mapping.path, []).append(mapping)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))
    variables = dict(nnx.to_flat_state(abstract))
    if set(variables) != set(groups):
        raise AssertionError("tensor_mappings() is out of sync with the Transformer's parameters")
    default_sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    filled = []
    for path, group in groups.items():
        array = read(group[0]) if group[0].layer is None else np.stack([read(mapping) for mapping in group])
        variable = variables[path]
        axes = variable.get_metadata().get("logical_axes")
        sharding = sharding_for(axes, array.shape) if sharding_for else default_sharding
        filled.append((path, variable.replace(jax.device_put(array, sharding))))
        del array
    return graphdef, nnx.from_flat_state(filled)


def relayout_params(config: ModelConfig, params: nnx.State, scan_layers: bool,
                    sharding_for: Optional[ShardingFor] = None) -> tuple[ModelConfig, nnx.GraphDef, nnx.State]:
    """`(config, graphdef, params)` of the model `(config, params)` with its layers stacked
    (`scan_layers=True`) or one entry per layer, copied one parameter at a time through host memory
    (`place_params`; sharding_for as there).

    `params` stay where they are while the copy is made: restore them into host memory (e.g. onto
    the CPU device) when the accelerators cannot hold the model twice.
    """
    source = {mapping.hf_name: mapping for mapping in tensor_mappings(config)}
    variables = dict(nnx.to_flat_state(params))

    def read(mapping: TensorMapping) -> np.ndarray:
        where = source[mapping.hf_name]
        value = variables[where.path][...]
        return np.asarray(jax.device_get(value if where.layer is None else value[where.layer]))

    config = dataclasses.replace(config, scan_layers=scan_layers)
    return (config, *place_params(config, read, sharding_for))


def _shard_plan(sizes: list[int], max_shard_bytes: int) -> list[list[int]]:
    """Groups consecutive tensor indices into shards of at most `max_shard_bytes` (a bigger tensor gets its own)."""
    shards, current, current_bytes = [], [], 0
    for i, size in enumerate(sizes):
        if current and current_bytes + size > max_shard_bytes:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(i)
        current_bytes += size
    if current:
        shards.append(current)
    return shards


def export_hf_checkpoint(
    config: ModelConfig,
    params: nnx.State,
    out_dir: str,
    *,
    max_shard_bytes: int = 5 * 2**30,
    dtype: str = "float32",
    tokenizer_dir: Optional[str] = None,
    extra_config: Optional[dict] = None,
) -> list[str]:
    """Writes an HF checkpoint directory that `AutoModelForCausalLM.from_pretrained(out_dir)` loads.

    params: the model's `nnx.State` (as from `nnx.split`), possibly sharded, in the layout
    `config.scan_layers` gives; gathered per tensor (per layer slice when stacked).
    dtype: "float32" or "bfloat16" for the stored tensors. max_shard_bytes bounds each weight
    file; more than one file comes with `model.safetensors.index.json`. tokenizer_dir: copy the
    tokenizer files found there. extra_config: merged into config.json (e.g. eos_token_id).
    Returns the names of the files written. A LoRA model (`config.lora`) is written merged: each
    adapted weight is `W + alpha/r * A B` (`models.lora.merged_weights`; `export_peft_adapter`
    writes the adapters on their own), W dequantized first when the base is quantized.
    """
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"export dtype must be 'float32' or 'bfloat16', got {dtype!r}")
    if config.lora is not None and config.lora.base_quantization:  # a quantized base: dequantized, then merged
        params, config = dequantized_base(params, config)
    if config.lora is not None:
        params, config = merged_weights(params, config.lora), dataclasses.replace(config, lora=None)
    np_dtype = np.dtype(dtype)
    hf_config = hf_config_from_model_config(config, extra_config)
    hf_config["dtype"] = dtype
    mappings = tensor_mappings(config)
    variables = dict(nnx.to_flat_state(params))
    missing = [m.path for m in mappings if m.path not in variables]
    if missing:
        raise CheckpointError(f"params have no entry {missing[0]} needed for a {config.architecture} checkpoint")

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    written = ["config.json"]

    sizes = [int(np.prod(m.hf_shape)) * np_dtype.itemsize for m in mappings]
    plan = _shard_plan(sizes, max_shard_bytes)
    file_names = [SINGLE_FILE] if len(plan) == 1 else [
        f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
    weight_map = {}
    for file_name, indices in zip(file_names, plan):
        tensors = {}
        for i in indices:
            mapping = mappings[i]
            value = variables[mapping.path][...]
            if mapping.layer is not None:  # the layer's slice of a stacked parameter
                value = value[mapping.layer]
            array = mapping.to_hf(np.asarray(jax.device_get(value), np.float32))
            if array.shape != mapping.hf_shape:
                raise CheckpointError(f"params entry {mapping.path} gives {mapping.hf_name!r} of shape {array.shape}, "
                                      f"expected {mapping.hf_shape} from the ModelConfig")
            tensors[mapping.hf_name] = np.ascontiguousarray(array.astype(np_dtype))
            weight_map[mapping.hf_name] = file_name
        save_file(tensors, os.path.join(out_dir, file_name), metadata={"format": "pt"})
        written.append(file_name)
        del tensors
    if len(plan) > 1:
        index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
        with open(os.path.join(out_dir, INDEX_FILE), "w") as f:
            json.dump(index, f, indent=2)
        written.append(INDEX_FILE)
    if tokenizer_dir is not None:
        written += copy_tokenizer_files(tokenizer_dir, out_dir)
    return written


PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"


def export_peft_adapter(config: ModelConfig, params: nnx.State, out_dir: str, base_model: str = "") -> list[str]:
    """Writes the LoRA adapters of `params` in the PEFT layout: adapter_config.json and
    adapter_model.safetensors, which `peft.PeftModel.from_pretrained(base, out_dir)` loads on the
    base model (docs/lora.md#export). Returns the names of the files written.

    Tensors: `base_model.model.model.layers.{i}.{self_attn|mlp}.{name}.lora_A.weight` `[r, in]` and
    `.lora_B.weight` `[out, r]` (float32), in the HF weights' input/output order (`tensor_mappings`).
    base_model: recorded as base_model_name_or_path.
    """
    if config.lora is None:
        raise CheckpointError("the model has no LoRA adapters to export (model.lora.rank is 0)")
    flat = dict(nnx.to_flat_state(params))
    tensors = {}
    for i in range(config.num_layers):
        ours, layer = (("layers",), i) if config.scan_layers else (("layers", i), None)
        for name in config.lora.targets:
            block = "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            a, b = (np.asarray(jax.device_get(flat[ours + (block, f"{name}_lora", part)][...]), np.float32) for part in "ab")
            if layer is not None:
                a, b = a[layer], b[layer]
            prefix = f"base_model.model.model.layers.{i}.{block}.{name}"
            tensors[f"{prefix}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, a.shape[-1]).T)
            tensors[f"{prefix}.lora_B.weight"] = np.ascontiguousarray(b.reshape(b.shape[0], -1).T)
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model or None,
        "r": config.lora.rank, "lora_alpha": config.lora.alpha, "lora_dropout": config.lora.dropout,
        "target_modules": list(config.lora.targets), "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "inference_mode": True, "modules_to_save": None,
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, PEFT_CONFIG_FILE), "w") as f:
        json.dump(adapter_config, f, indent=2)
    save_file(tensors, os.path.join(out_dir, PEFT_WEIGHTS_FILE), metadata={"format": "pt"})
    return [PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE]


def copy_tokenizer_files(src_dir: str, dst_dir: str) -> list[str]:
    """Copies the tokenizer files (TOKENIZER_FILES) present in `src_dir`; errors if there is no tokenizer.json."""
    if not os.path.isfile(os.path.join(src_dir, "tokenizer.json")):
        raise CheckpointError(f"no tokenizer.json in tokenizer directory {src_dir!r}")
    os.makedirs(dst_dir, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src_dir, name)):
            shutil.copyfile(os.path.join(src_dir, name), os.path.join(dst_dir, name))
            copied.append(name)
    return copied
