"""Checkpoint conversion: Hugging Face safetensors <-> orbax, GGUF -> either, and the `jaxrl-self convert` helpers.

An orbax model directory written here holds:
  params/             the model's `nnx.State` (ocp.StandardCheckpointer), float32
  model_config.json   `ModelConfig.to_dict()`
  hf_config.json      the source `config.json` (for GGUF: the one its metadata implies; keeps token ids for export)
  tokenizer/          the source's tokenizer files (for GGUF: tokenizer.json + tokenizer_config.json from its metadata)

GGUF weights are dequantized to float32 on import; nothing is written back as GGUF.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Callable, Optional

import jax
import orbax.checkpoint as ocp
from flax import nnx
from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import WordLevel

from jaxrl_self.models.checkpoint_io import (
    ShardingFor,
    copy_tokenizer_files,
    export_hf_checkpoint,
    load_hf_checkpoint,
)
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.gguf import load_gguf_weights, open_gguf
from jaxrl_self.models.gguf_tokenizer import write_gguf_tokenizer
from jaxrl_self.models.hf_config import CheckpointError, read_hf_config
from jaxrl_self.models.hf_tokenizer import HFTokenizer
from jaxrl_self.models.tokenizer import CharTokenizer, ExtendedTokenizer
from jaxrl_self.models.transformer import Transformer

PARAMS_DIR = "params"
MODEL_CONFIG_FILE = "model_config.json"
HF_CONFIG_FILE = "hf_config.json"
TOKENIZER_DIR = "tokenizer"
# config.json entries that ModelConfig does not hold but an exported checkpoint should keep.
_HF_KEYS_KEPT = ("bos_token_id", "eos_token_id", "pad_token_id")
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30


def require_empty(out_dir: str):
    """Raises CheckpointError unless `out_dir` is absent or an empty directory."""
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise CheckpointError(f"output directory {out_dir!r} exists and is not empty")


def save_orbax_model(out_dir: str, config: ModelConfig, params: nnx.State, hf_config: dict,
                     write_tokenizer: Optional[Callable[[str], list]] = None):
    """Writes an orbax model directory (layout in the module docstring).

    hf_config: the source `config.json` dict (kept for export); write_tokenizer(dir): writes the
    tokenizer files into `dir`, or None when the source has no tokenizer.
    """
    out_dir = os.path.abspath(out_dir)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(out_dir, PARAMS_DIR), params)
    checkpointer.wait_until_finished()
    with open(os.path.join(out_dir, MODEL_CONFIG_FILE), "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    with open(os.path.join(out_dir, HF_CONFIG_FILE), "w") as f:
        json.dump(hf_config, f, indent=2)
    if write_tokenizer is not None:
        write_tokenizer(os.path.join(out_dir, TOKENIZER_DIR))


def hf_to_orbax(hf_dir: str, out_dir: str) -> ModelConfig:
    """Converts an HF checkpoint directory into an orbax model directory (layout in the module docstring)."""
    require_empty(out_dir)
    config, _, params = load_hf_checkpoint(hf_dir)
    has_tokenizer = os.path.isfile(os.path.join(hf_dir, "tokenizer.json"))
    save_orbax_model(out_dir, config, params, read_hf_config(hf_dir),
                     (lambda dst: copy_tokenizer_files(hf_dir, dst)) if has_tokenizer else None)
    return config


def gguf_to_orbax(gguf_path: str, out_dir: str) -> ModelConfig:
    """Converts a GGUF file (weights dequantized to float32, tokenizer from its metadata) into an orbax model directory."""
    require_empty(out_dir)
    reader = open_gguf(gguf_path)
    config, _, params, hf_config = load_gguf_weights(reader, gguf_path)
    save_orbax_model(out_dir, config, params, hf_config, lambda dst: write_gguf_tokenizer(reader, gguf_path, dst))
    return config


def gguf_to_hf(gguf_path: str, out_dir: str, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
               dtype: str = "float32") -> list[str]:
    """Converts a GGUF file into an HF checkpoint directory (dequantized weights + tokenizer); returns the files written."""
    require_empty(out_dir)
    reader = open_gguf(gguf_path)
    config, _, params, hf_config = load_gguf_weights(reader, gguf_path)
    extra = {key: hf_config[key] for key in _HF_KEYS_KEPT if key in hf_config}
    with tempfile.TemporaryDirectory() as tokenizer_dir:
        write_gguf_tokenizer(reader, gguf_path, tokenizer_dir)
        return export_hf_checkpoint(config, params, out_dir, max_shard_bytes=max_shard_bytes, dtype=dtype,
                                    extra_config=extra, tokenizer_dir=tokenizer_dir)


def load_orbax_model(ckpt_dir: str, *, sharding_for: Optional[ShardingFor] = None) -> tuple[ModelConfig, nnx.GraphDef, nnx.State]:
    """(config, graphdef, params) from an orbax model directory written by `hf_to_orbax`.

    sharding_for: `(logical_axes, shape) -> Sharding` per parameter; default the first device.
    """
    config_path = os.path.join(ckpt_dir, MODEL_CONFIG_FILE)
    params_path = os.path.abspath(os.path.join(ckpt_dir, PARAMS_DIR))
    if not os.path.isfile(config_path):
        raise CheckpointError(f"no {MODEL_CONFIG_FILE} in orbax model directory {ckpt_dir!r}")
    if not os.path.isdir(params_path):
        raise CheckpointError(f"no {PARAMS_DIR}/ in orbax model directory {ckpt_dir!r}")
    with open(config_path) as f:
        config = ModelConfig.from_dict(json.load(f))
    graphdef, targets = abstract_params(config, sharding_for)
    params = ocp.StandardCheckpointer().restore(params_path, targets)
    return config, graphdef, params


def abstract_params(config: ModelConfig, sharding_for: Optional[ShardingFor] = None) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, params) of the model `config` describes, its params `jax.ShapeDtypeStruct`s
    (float32, placed by `sharding_for(logical_axes, shape)`, default the first device): a target
    to restore a checkpoint's params into."""
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))
    default_sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def target(variable: nnx.Variable) -> nnx.Variable:
        shape = variable.shape
        sharding = sharding_for(variable.get_metadata().get("logical_axes"), shape) if sharding_for else default_sharding
        return variable.replace(jax.ShapeDtypeStruct(shape, variable.dtype, sharding=sharding))

    return graphdef, jax.tree.map(target, abstract, is_leaf=lambda x: isinstance(x, nnx.Variable))


def orbax_to_hf(ckpt_dir: str, out_dir: str, *, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
                dtype: str = "float32") -> list[str]:
    """Exports an orbax model directory as an HF checkpoint directory; returns the files written."""
    require_empty(out_dir)
    config, _, params = load_orbax_model(ckpt_dir)
    hf_config_path = os.path.join(ckpt_dir, HF_CONFIG_FILE)
    extra = {}
    if os.path.isfile(hf_config_path):
        with open(hf_config_path) as f:
            source = json.load(f)
        extra = {key: source[key] for key in _HF_KEYS_KEPT if key in source}
    tokenizer_dir = os.path.join(ckpt_dir, TOKENIZER_DIR)
    return export_hf_checkpoint(
        config, params, out_dir, max_shard_bytes=max_shard_bytes, dtype=dtype, extra_config=extra,
        tokenizer_dir=tokenizer_dir if os.path.isdir(tokenizer_dir) else None)


def write_tokenizer(tokenizer, out_dir: str) -> list[str]:
    """Writes `tokenizer` as tokenizer.json + tokenizer_config.json, which `transformers`'
    `AutoTokenizer.from_pretrained(out_dir)` loads and which encodes text to the same ids; returns
    the files written.

    tokenizer: an `HFTokenizer` (from an HF directory or a GGUF file), a `CharTokenizer` (a
    procedural task's: a character vocabulary, its multi-character tags as added tokens), or an
    `ExtendedTokenizer` over either (its extra tokens added after the vocabulary).
    """
    extra_tokens = ()
    if isinstance(tokenizer, ExtendedTokenizer):
        tokenizer, extra_tokens = tokenizer.base, tokenizer.extra_tokens
    if isinstance(tokenizer, HFTokenizer):
        fast = Tokenizer.from_str(tokenizer.tokenizer.to_str())
        config = {**tokenizer.special_tokens, "chat_template": tokenizer.chat_template}
    elif isinstance(tokenizer, CharTokenizer):
        fast = Tokenizer(WordLevel(tokenizer.token_to_id))
        fast.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
        fast.decoder = decoders.Fuse()  # joined without spaces
        pad, bos, eos, *tags = tokenizer.special_tokens
        fast.add_special_tokens([AddedToken(t, normalized=False) for t in (pad, bos, eos)])
        fast.add_tokens([AddedToken(t, normalized=False) for t in tags])  # task tags: kept when decoding
        config = {"pad_token": pad, "bos_token": bos, "eos_token": eos}
    else:
        raise CheckpointError(f"cannot write a {type(tokenizer).__name__} as Hugging Face tokenizer files")
    fast.add_tokens([AddedToken(t, normalized=False) for t in extra_tokens])  # kept when decoding, as there
    os.makedirs(out_dir, exist_ok=True)
    fast.save(os.path.join(out_dir, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              **{key: value for key, value in config.items() if value is not None}}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    return ["tokenizer.json", "tokenizer_config.json"]


def special_token_ids(tokenizer) -> dict:
    """config.json's bos_token_id / eos_token_id / pad_token_id of `tokenizer` (those it has)."""
    ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id}
    return {key: value for key, value in ids.items() if value is not None}


def add_convert_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds `--from {hf,orbax,gguf} --to {hf,orbax} SRC DST [--max-shard-bytes N] [--dtype D]` to `parser`."""
    parser.add_argument("--from", dest="source_format", choices=("hf", "orbax", "gguf"), required=True,
                        help="format of SRC: an HF safetensors directory, an orbax model directory or a .gguf file")
    parser.add_argument("--to", dest="target_format", choices=("hf", "orbax"), required=True, help="format of DST")
    parser.add_argument("src", help="source checkpoint directory (or .gguf file)")
    parser.add_argument("dst", help="output directory (must not exist or be empty)")
    parser.add_argument("--max-shard-bytes", type=int, default=DEFAULT_MAX_SHARD_BYTES,
                        help="largest safetensors file written when converting to hf")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="dtype of the tensors written when converting to hf")
    return parser


def run_convert(args: argparse.Namespace) -> str:
    """Runs the conversion `add_convert_arguments` describes; returns a one-line summary."""
    direction = (args.source_format, args.target_format)
    if direction == ("hf", "orbax"):
        config = hf_to_orbax(args.src, args.dst)
        return f"converted {config.architecture} checkpoint {args.src} (hf) -> {args.dst} (orbax)"
    if direction == ("gguf", "orbax"):
        config = gguf_to_orbax(args.src, args.dst)
        return f"converted {config.architecture} model {args.src} (gguf) -> {args.dst} (orbax)"
    if direction == ("gguf", "hf"):
        files = gguf_to_hf(args.src, args.dst, max_shard_bytes=args.max_shard_bytes, dtype=args.dtype)
        return f"converted {args.src} (gguf) -> {args.dst} (hf): {', '.join(files)}"
    if direction == ("orbax", "hf"):
        files = orbax_to_hf(args.src, args.dst, max_shard_bytes=args.max_shard_bytes, dtype=args.dtype)
        return f"converted {args.src} (orbax) -> {args.dst} (hf): {', '.join(files)}"
    raise ValueError(f"convert --from {args.source_format} --to {args.target_format}: choose two different formats")
