"""Per-chip memory, FLOPs and a roofline step time of the RL update and the sampler on a TPU topology,
by ahead-of-time (AOT) compilation on a machine without TPUs.

    pip install -e ".[tpu]"     # libtpu: the TPU compiler (no TPU needed)
    python benchmarks/aot_memory.py --model qwen2.5-1.5b --topology v5e:2x2 --micro-batch-rows 1
    python benchmarks/aot_memory.py --model qwen2.5-1.5b --search-micro-batch --set model.remat=full
    python benchmarks/aot_memory.py --hf-config path/to/config.json --topology v5p:2x2x2 --mesh 2,4,1
    python benchmarks/aot_memory.py --model qwen2.5-14b --chips 1 --no-sampler --set model.lora.rank=8 \
        --set model.lora.base_quantization=q4_0 --set model.param_dtype=bfloat16 --set model.scan_layers=True
      (a LoRA update on a frozen base kept in 4-bit blocks: frozen_base_bytes_per_chip counts the blocks)

Prints ONE JSON object. Nothing is allocated at model size: the model, the optimizer state and the
batches are abstract (`nnx.eval_shape` / `jax.eval_shape` / `jax.ShapeDtypeStruct` with shardings)
and the jitted functions are lowered and compiled for the abstract devices of
`jax.experimental.topologies.get_topology_desc` (libtpu's compiler, which runs on the CPU). The
benchmark process itself runs on JAX_PLATFORMS=cpu (set here unless already set).

The project's own path builds everything: `configs/default.py` through `jaxrl_self.config`
(arguments set rl/task/model/mesh keys, then `--set key=value` overrides, then `validate` and
`validate_devices`), `model_config_from_hf` for the shape plus the run's execution options
(`models.config.with_execution_options`), the RL optimizer as `train.context.RunContext` builds
it, `init_train_state` (reference when `needs_reference`), `abstract_state` / `batch_sharding` for
the shardings, `make_rl_update` and `make_sampler`, both given the mesh their activations are
constrained to, as the training loop builds them.

Figures (per chip unless named global):
  memory (XLA's `compiled.memory_analysis()`, CompiledMemoryStats): argument_bytes,
    output_bytes, temp_bytes (XLA's buffer-assignment temporaries: activations kept for the
    backward pass, gathered weights, workspaces; HBM only: buffers XLA's memory-space assignment
    puts in on-chip VMEM are not in it, so a small enough program reports 0), alias_bytes (outputs
    written into donated inputs), generated_code_bytes.
    peak_bytes = argument + output + temp - alias (outputs that do not reuse a donated input need
    their own buffers: without donation the updated TrainState is a second copy of the state).
    xla_peak_bytes: XLA's own `peak_memory_in_bytes` (reported, not used for `fits`).
    When the program does not fit, libtpu refuses to compile it (RESOURCE_EXHAUSTED: "the total
    memory required for HLO temporaries (36.05G) exceeds available HBM (15.75G)"; it cannot be told
    to assume more HBM): the report then has fits false, from_oom_error true, compile_error, and
    temp_bytes parsed from that message (GiB, 2 decimals; `xla_available_hbm_bytes` is the usable
    HBM XLA assumed, e.g. 15.75 GiB of v5e's 16), argument/output bytes from the abstract inputs'
    shards (output: the new TrainState), alias bytes from the donated arguments, no FLOPs from XLA.
    fits = peak_bytes <= hbm_bytes (the nominal HBM per chip; XLA plans with a little less, 15.75
    GiB on v5e), and the compile succeeded,
    spare_fraction = 1 - peak_bytes / hbm_bytes.
  flops (analytic; XLA's cost_analysis counts a loop body -- lax.scan over micro-batches, the
    sampler's while_loop -- once, so its "flops" figure is reported only for reference as
    xla_cost_analysis_flops):
    matmul_params = ModelConfig.layer_matmul_params = layers * (E*H*D + 2*E*K*D + H*D*E + 3*E*F)   (q, k, v, o, gate, up, down)
    forward(rows, S) = 2 * matmul_params * rows * S + 2 * E * V * rows * S_head
                       + 4 * layers * H * D * S^2 * rows
      S = prompt_len + new_tokens, S_head = new_tokens: the output projection runs at completion
      positions only (`train.policy`); the attention term counts QK^T and
      PV over the full S x S square with the einsum kernel (it computes masked scores, it does not
      skip them), and over the causal half with splash attention (it skips blocks above the diagonal).
    update = epochs * (3 * forward(N, S) + remat extra): backward = 2x forward; model.remat=full
      adds the layers' forward again, save_dots adds the attention term, model.logprob_chunk > 0
      adds the output projection again (each chunk is recomputed in the backward pass). The
      optimizer (~10 FLOPs per parameter) is left out. NOT counted: the old-logp / reference
      forward passes (`make_batch_builder`, before the update) and sampling.
    Per chip = global / chips (an even split of the work).
  hbm_traffic_bytes (analytic, per chip, per update call; a lower-bound-style estimate):
    per optimizer step: 7 * state_shard_bytes (params, grads, Adam mu and nu read; params, mu, nu
      written; float32, the chip's shard);
    per micro-batch: (2 + remat) * compute_weight_bytes / tensor (the gathered weights read in the
      forward and the backward pass, and again when layers are rematerialised)
      + 2 * float32_weight_bytes / tensor (each chip's full-size weight gradient, written, then read
      by the reduce-scatter) + 3 * state_shard_bytes (gradient accumulation: read acc, read
      new, write acc) + 2 * temp_bytes (the activations kept for the backward pass, approximated
      by XLA's temp buffer: written once in the forward pass and read once in the backward pass).
  roofline_step_s = max(flops_per_chip / peak_flops, hbm_traffic_bytes / hbm_bandwidth).
  sampler decode (per decode step, per chip): bytes = compute-dtype weight bytes / tensor (every
    weight read once per step; with fsdp-sharded weights each chip still reads the gathered
    whole) + the KV cache rows of this chip over the static cache (prompt_len + new_tokens - 1
    slots, the implementation attends over all of them at every step: 2 * layers * rows_per_chip
    * slots * K/tensor * D * dtype bytes); flops = (2 * (matmul_params + E*V) * rows_per_chip + 4 *
    layers * H * D * slots * rows_per_chip) / tensor. Prefill is not counted. decode_step_s = max(flops / peak, bytes / bandwidth);
    roofline_tokens_per_s = global rows / decode_step_s (all chips decode in parallel).
  sampler_vocab_all_reduce: the compiled sampler's optimized HLO has an all-reduce whose operand or
    result has a dimension equal to the vocabulary size (the logits summed over chips);
    sampler_vocab_all_reduce_lines counts such HLO lines.

Hardware (nominal, per chip): v5e 16 GiB, 197 TFLOP/s bf16, 819 GB/s; v5p 95 GiB, 459 TFLOP/s,
2765 GB/s; v6e 32 GiB, 918 TFLOP/s, 1640 GB/s; v4 32 GiB, 275 TFLOP/s, 1228 GB/s.

libtpu allows one process at a time unless ALLOW_MULTIPLE_LIBTPU_LOAD=1, which this module sets
(compile-only use: nothing runs on a TPU). It prints libtpu start-up warnings (TPU_ACCELERATOR_TYPE,
TPU_WORKER_HOSTNAMES) on stderr; they are harmless here.
"""
from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the benchmark itself runs on the CPU; the TPU is only compiled for
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compile-only: several processes (pytest -n) may load libtpu

import argparse
import dataclasses
import importlib.util
import json
import math
import pathlib
import re
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from jaxrl_self.config import apply_override, load_config_file, validate, validate_devices  # noqa: E402
from jaxrl_self.models.hf_config import model_config_from_hf  # noqa: E402
from jaxrl_self.models.lora import split_adapters  # noqa: E402
from jaxrl_self.models.attention import attention_implementation  # noqa: E402
from jaxrl_self.models.transformer import Transformer  # noqa: E402
from jaxrl_self.parallel import SAMPLING_AXIS_RULES, abstract_state, batch_sharding, make_mesh  # noqa: E402
from jaxrl_self.parallel.rules import activation_mesh  # noqa: E402
from jaxrl_self.sampling.sampler import SamplingConfig, knobs_from, make_sampler  # noqa: E402
from jaxrl_self.algorithms.registry import algorithm_of  # noqa: E402
from jaxrl_self.models.config import with_execution_options  # noqa: E402
from jaxrl_self.train.context import rl_optimizer  # noqa: E402
from jaxrl_self.train.batch import RolloutBatch  # noqa: E402
from jaxrl_self.train.rl_step import make_rl_update, needs_old_logp, needs_reference  # noqa: E402
from jaxrl_self.train.state import init_train_state  # noqa: E402
from jaxrl_self.train.value_head import init_value_head  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "default.py"
INSTALL_HINT = 'libtpu (the TPU compiler) is not installed: pip install -e ".[tpu]"  (or: pip install "jax[tpu]")'
GIB = 2**30

# Nominal per-chip figures: HBM bytes, dense bf16 FLOP/s, HBM bytes/s
HARDWARE = {
    "v5e": {"hbm_bytes": 16 * GIB, "peak_flops": 197e12, "hbm_bandwidth": 819e9},
    "v5p": {"hbm_bytes": 95 * GIB, "peak_flops": 459e12, "hbm_bandwidth": 2765e9},
    "v6e": {"hbm_bytes": 32 * GIB, "peak_flops": 918e12, "hbm_bandwidth": 1640e9},
    "v4": {"hbm_bytes": 32 * GIB, "peak_flops": 275e12, "hbm_bandwidth": 1228e9},
}
TOPOLOGIES = ("v5e:2x2", "v5e:2x4", "v5e:4x4", "v5e:8x8", "v5p:2x2x1", "v5p:2x2x2", "v5p:2x2x4", "v6e:2x2", "v6e:4x4", "v4:2x2x2")

# HF config.json fields of the real checkpoints (the ones model_config_from_hf reads)
PRESETS = {
    "qwen2.5-0.5b": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_act": "silu",
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 32768,
    },
    "qwen2.5-1.5b": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2, "hidden_act": "silu",
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 32768,
    },
    "qwen2.5-3b": {
        "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
        "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2, "hidden_act": "silu",
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 32768,
    },
    "qwen2.5-14b": {
        "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 5120, "intermediate_size": 13824,
        "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8, "hidden_act": "silu",
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768,
    },
    "qwen2.5-32b": {
        "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 5120, "intermediate_size": 27648,
        "num_hidden_layers": 64, "num_attention_heads": 40, "num_key_value_heads": 8, "hidden_act": "silu",
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768,
    },
    "qwen2.5-72b": {
        "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 8192, "intermediate_size": 29568,
        "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "hidden_act": "silu",
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768,
    },
    "qwen2.5-7b": {
        "model_type": "qwen2", "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_act": "silu",
        "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "max_position_embeddings": 32768,
    },
    "llama-3.1-8b": {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_act": "silu",
        "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "max_position_embeddings": 131072,
        "attention_bias": False, "mlp_bias": False,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    },
}


class LibTPUMissing(RuntimeError):
    pass


# ----------------------------------------------------------------------------------------------
# topology, config, model


def tpu_topology(name: str):
    """The abstract devices of a TPU topology ("v5e:2x2", ...), compiled for through libtpu."""
    try:
        missing = importlib.util.find_spec("libtpu") is None
    except ValueError:  # sys.modules["libtpu"] is None
        missing = True
    if missing:
        raise LibTPUMissing(INSTALL_HINT)
    from jax.experimental import topologies
    try:
        return topologies.get_topology_desc(platform="tpu", topology_name=name, chip_config_name="default",
                                            chips_per_host_bounds=(2, 2, 1), num_slices=1)
    except Exception as error:  # libtpu present but unusable: say which topology and why
        raise RuntimeError(f"get_topology_desc({name!r}) failed: {type(error).__name__}: {error}") from error


def hardware_of(topology: str) -> dict:
    return HARDWARE[topology.split(":")[0]]


def run_config(hf: dict, *, prompts: int, group: int, prompt_len: int, new_tokens: int, mesh_shape, dtype="bfloat16",
               algorithm="grpo", kl_coef=None, micro_batch_rows=None, overrides=(), base=DEFAULT_CONFIG):
    """The project config (`configs/default.py`) for this RL shape and mesh, validated.

    micro_batch_rows: rows per chip per micro-batch (None: config.rl.micro_batches as it is);
    converted to `rl.micro_batches` = rows per minibatch / (micro_batch_rows * data * fsdp).
    overrides: ("key=value", ...) applied with `jaxrl_self.config.apply_override` after the arguments.
    """
    config = load_config_file(base)
    model_config = model_config_from_hf(hf, dtype=dtype)
    settings = {
        "rl.algorithm": algorithm, "rl.prompts_per_step": prompts, "rl.group_size": group, "rl.max_new_tokens": new_tokens,
        "task.max_prompt_len": prompt_len, "model.dtype": dtype,
        "model.hidden_size": model_config.hidden_size, "model.num_layers": model_config.num_layers,
        "model.num_heads": model_config.num_heads, "model.num_kv_heads": model_config.num_kv_heads,
        "model.head_dim": model_config.head_dim, "model.intermediate_size": model_config.intermediate_size,
        "model.rope_theta": float(model_config.rope_theta),
        "model.max_position_embeddings": max(model_config.max_position_embeddings, prompt_len + new_tokens),
        "mesh.num_devices": math.prod(mesh_shape), "mesh.data": mesh_shape[0], "mesh.fsdp": mesh_shape[1],
        "mesh.tensor": mesh_shape[2],
    }
    if kl_coef is not None:
        settings["rl.kl_coef"] = float(kl_coef)
    for key, value in settings.items():
        apply_override(config, key, repr(value))
    for text in overrides:
        key, _, value = text.partition("=")
        apply_override(config, key.strip(), value.strip())
    if micro_batch_rows is not None:
        rl = config.rl
        shards = config.mesh.data * config.mesh.fsdp
        rows = rl.prompts_per_step * rl.group_size // rl.minibatches
        if rows % (micro_batch_rows * shards):
            raise ValueError(f"{rows} rows per minibatch cannot be cut into micro-batches of {micro_batch_rows} rows "
                             f"on each of {shards} data-parallel chips")
        rl.micro_batches = rows // (micro_batch_rows * shards)
    validate(config)
    validate_devices(config, math.prod(mesh_shape), 1)
    return config


def model_config_for(config, hf: dict):
    """The ModelConfig of `hf` in the config's dtype, running with the config's execution options."""
    return with_execution_options(model_config_from_hf(hf, dtype=config.model.dtype), config)


def abstract_model(model_config):
    """(graphdef, params as ShapeDtypeStructs): no parameter is allocated."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(model_config, rngs=nnx.Rngs(0))))


def _replicated(mesh, shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, P()))


def abstract_train_batch(config, mesh):
    """The update's train batch (rl_step module docstring) as sharded ShapeDtypeStructs."""
    rl = config.rl
    n, p, t = rl.prompts_per_step * rl.group_size, config.task.max_prompt_len, rl.max_new_tokens
    shapes = {"prompt_tokens": ((n, p), jnp.int32), "prompt_mask": ((n, p), jnp.bool_),
              "completion_tokens": ((n, t), jnp.int32), "completion_mask": ((n, t), jnp.bool_),
              "advantages": ((n, t) if algorithm_of(rl).token_advantages else (n,), jnp.float32)}
    if needs_old_logp(rl):
        shapes["old_logp"] = ((n, t), jnp.float32)
    if needs_reference(rl):
        shapes["ref_logp"] = ((n, t), jnp.float32)
    if algorithm_of(rl).value_head:
        shapes.update(old_values=((n, t), jnp.float32), returns=((n, t), jnp.float32))
    return RolloutBatch(**{k: jax.ShapeDtypeStruct(s, d, sharding=batch_sharding(mesh, s)) for k, (s, d) in shapes.items()})


_OOM = re.compile(r"required for HLO temporaries \(([0-9.]+)([KMGT]?)\) exceeds available HBM \(([0-9.]+)([KMGT]?)\)")


def _parse_bytes(number: str, unit: str) -> int:
    return int(float(number) * 1024 ** " KMGT".index(unit or " "))


def _memory(compiled, hbm_bytes) -> dict:
    stats = compiled.memory_analysis()
    mem = {"argument_bytes": stats.argument_size_in_bytes, "output_bytes": stats.output_size_in_bytes,
           "temp_bytes": stats.temp_size_in_bytes, "alias_bytes": stats.alias_size_in_bytes,
           "generated_code_bytes": stats.generated_code_size_in_bytes,
           "xla_peak_bytes": getattr(stats, "peak_memory_in_bytes", None)}
    mem["peak_bytes"] = mem["argument_bytes"] + mem["output_bytes"] + mem["temp_bytes"] - mem["alias_bytes"]
    return _verdict(mem, hbm_bytes)


def _verdict(mem: dict, hbm_bytes) -> dict:
    mem["hbm_bytes"] = hbm_bytes
    mem["fits"] = mem["peak_bytes"] <= hbm_bytes and not mem.get("compile_error")
    mem["spare_fraction"] = round(1 - mem["peak_bytes"] / hbm_bytes, 4)
    mem["peak_gib"] = round(mem["peak_bytes"] / GIB, 3)
    mem["temp_gib"] = round(mem["temp_bytes"] / GIB, 3)
    return mem


def _donated_bytes(lowered) -> int:
    """Per-chip bytes of the donated arguments of a `jax.stages.Lowered` (0 when none is donated)."""
    total = 0
    for info in jax.tree.leaves(lowered.args_info, is_leaf=lambda x: hasattr(x, "donated")):
        if getattr(info, "donated", False):
            aval, sharding = info._aval, getattr(info, "sharding", None)
            shape = sharding.shard_shape(aval.shape) if sharding is not None and hasattr(sharding, "shard_shape") else aval.shape
            total += math.prod(shape) * jnp.dtype(aval.dtype).itemsize
    return total


def _compile(lowered, compiler_options, hbm_bytes, argument_bytes, output_bytes):
    """(compiled or None, memory report). The TPU compiler refuses a program whose temporaries do
    not fit the chip's HBM (RESOURCE_EXHAUSTED, "... HLO temporaries (36.05G) exceeds available HBM
    (15.75G)"; XLA's G = GiB, 2 decimals) and, from this libtpu, cannot be told to assume a larger
    HBM (xla_tpu_max_hbm_size_mib only lowers it). Then the report has fits False, temp_bytes parsed
    from the message, argument/output bytes from the abstract inputs' shards (output: the new
    TrainState), alias bytes = the donated arguments' bytes (at most the output's), and compile_error."""
    try:
        compiled = lowered.compile(compiler_options)
    except jax.errors.JaxRuntimeError as error:
        match = _OOM.search(str(error))
        if "RESOURCE_EXHAUSTED" not in str(error) or not match:
            raise
        temp = _parse_bytes(*match.group(1, 2))
        donated = _donated_bytes(lowered)
        alias = min(donated, output_bytes)
        mem = {"argument_bytes": argument_bytes, "output_bytes": output_bytes, "temp_bytes": temp, "alias_bytes": alias,
               "generated_code_bytes": None, "xla_peak_bytes": None, "peak_bytes": argument_bytes + output_bytes + temp - alias,
               "compile_error": str(error).strip().splitlines()[0][:400],
               "xla_available_hbm_bytes": _parse_bytes(*match.group(3, 4)), "from_oom_error": True}
        return None, _verdict(mem, hbm_bytes)
    return compiled, _memory(compiled, hbm_bytes)


def _xla_flops(compiled):
    if compiled is None:
        return None
    try:
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return float(cost.get("flops", float("nan")))
    except Exception:  # not every backend version reports it
        return None


def _tree_bytes(tree) -> int:
    return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _shard_bytes(tree) -> int:
    """Bytes one chip holds of a tree of sharded ShapeDtypeStructs (the largest shard per leaf)."""
    total = 0
    for x in jax.tree.leaves(tree):
        shard = x.sharding.shard_shape(x.shape)
        total += math.prod(shard) * jnp.dtype(x.dtype).itemsize
    return total


# ----------------------------------------------------------------------------------------------
# the update


def compile_update(config, model_config, mesh, hardware, compiler_options=None) -> dict:
    """Lowers and compiles `make_rl_update` for `mesh` (activations constrained to it); memory, FLOPs, roofline."""
    rl = config.rl
    graphdef, params = abstract_model(model_config)
    optimizer = rl_optimizer(config)
    value_params = init_value_head(model_config.hidden_size) if algorithm_of(rl).value_head else None
    state = jax.eval_shape(lambda p: init_train_state(p, optimizer, config.seed, with_reference=needs_reference(rl),
                                                      value_params=value_params,
                                                      reference_dtype=model_config.compute_dtype,
                                                      param_dtype=config.model.param_dtype), params)
    state = abstract_state(state, mesh)
    batch = abstract_train_batch(config, mesh)
    key = _replicated(mesh, (), jax.random.key(0).dtype)
    update = make_rl_update(graphdef, optimizer, rl, mesh)
    started = time.perf_counter()
    compiled, memory = _compile(update.lower(state, batch, key), compiler_options, hardware["hbm_bytes"],
                                _shard_bytes((state, batch)), _shard_bytes(state))
    compile_s = time.perf_counter() - started

    chips, tensor = mesh.size, mesh.shape["tensor"]
    mc = model_config
    n, p, t = rl.prompts_per_step * rl.group_size, config.task.max_prompt_len, rl.max_new_tokens
    s = p + t
    s_head = t  # the output projection runs at completion positions only (train.policy)
    layers_fwd = 2 * mc.layer_matmul_params * n * s
    attention_fwd = 4 * mc.num_layers * mc.num_heads * mc.head_dim * s * s * n
    with activation_mesh(mesh):
        kernel = attention_implementation(mc, training_tokens=s)
    if kernel == "splash":
        attention_fwd //= 2
    head_fwd = 2 * mc.hidden_size * mc.vocab_size * n * s_head
    forward = layers_fwd + attention_fwd + head_fwd
    remat = mc.remat
    extra = {"full": layers_fwd + attention_fwd, "save_dots": attention_fwd}.get(remat, 0)
    if mc.logprob_chunk > 0:
        extra += head_fwd
    flops = rl.epochs * (3 * forward + extra)
    optimizer_steps = rl.epochs * rl.minibatches
    micro_batches = optimizer_steps * rl.micro_batches

    trainable, frozen = split_adapters(state.params)  # a LoRA model (model.lora) updates its adapters only
    state_shard = _shard_bytes(trainable)  # float32 trainable params: this chip's shard
    weights_f32 = _tree_bytes(split_adapters(params)[0])  # the weight gradients formed
    # float32 matrices are read in the compute dtype; a quantized base's blocks (model.lora.base_quantization) as stored
    cast = lambda x: (jnp.dtype(mc.compute_dtype).itemsize if x.ndim >= 2 else 4) if x.dtype == jnp.float32 else x.dtype.itemsize
    weights_compute = sum(math.prod(x.shape) * cast(x) for x in jax.tree.leaves(params))
    reads_per_micro = 2 + (1 if remat == "full" else 0)
    traffic = (optimizer_steps * 7 * state_shard
               + micro_batches * (reads_per_micro * weights_compute / tensor + 2 * weights_f32 / tensor
                                  + 3 * state_shard + 2 * memory["temp_bytes"]))
    flops_chip = flops / chips
    compute_s, memory_s = flops_chip / hardware["peak_flops"], traffic / hardware["hbm_bandwidth"]
    return {
        "compile_s": round(compile_s, 1),
        "memory": memory,
        "rows": n, "sequence_len": s, "micro_batches_per_minibatch": rl.micro_batches, "optimizer_steps": optimizer_steps,
        "rows_per_chip_per_micro_batch": n // rl.minibatches // rl.micro_batches // (mesh.shape["data"] * mesh.shape["fsdp"]),
        "params": sum(math.prod(x.shape) for x in jax.tree.leaves(params)),
        "trainable_params": sum(math.prod(x.shape) for x in jax.tree.leaves(trainable)),
        "optimizer_state_bytes_per_chip": _shard_bytes(state.opt_state),
        "frozen_base_bytes_per_chip": _shard_bytes(frozen),
        "matmul_params": mc.layer_matmul_params,
        "attention_kernel": kernel,
        "flops": {"global": flops, "per_chip": flops_chip, "forward": forward, "remat_extra": extra,
                  "remat_ratio": flops / (rl.epochs * 3 * forward),
                  "output_head_positions": s_head,
                  "counted": "epochs * (3 * forward + remat extra) of the policy on the train batch; old-logp/reference "
                             "forwards (batch builder) and sampling not counted",
                  "xla_cost_analysis_flops": _xla_flops(compiled),
                  "xla_note": "XLA counts a scan/while body once (micro-batch scan, optimizer-step scan): not the step total"},
        "hbm_traffic_bytes": traffic,
        "roofline": {"compute_s": compute_s, "memory_s": memory_s, "step_s": max(compute_s, memory_s),
                     "bound": "compute" if compute_s >= memory_s else "memory",
                     "tokens_per_s": n * s / max(compute_s, memory_s)},
        "_compiled": compiled,
    }


# ----------------------------------------------------------------------------------------------
# the sampler


def sampler_params(params, mesh, model_config):
    """The sampler's abstract params, as `sampling.sampler.make_layout_copier` leaves them: matrices
    in the compute dtype, laid out by `parallel.SAMPLING_AXIS_RULES`."""
    dtype = jnp.dtype(model_config.compute_dtype)
    cast = lambda x: jax.ShapeDtypeStruct(x.shape, dtype if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim >= 2 else x.dtype)
    return abstract_state(jax.tree.map(cast, params), mesh, SAMPLING_AXIS_RULES), f"SAMPLING_AXIS_RULES ({dtype.name} matrices)"


def vocab_all_reduce_lines(hlo_text: str, vocab: int) -> list:
    """Lines of optimized HLO with an all-reduce whose operand or result has a dimension == vocab."""
    dims = re.compile(r"\[([0-9,]+)\]")
    found = []
    for line in hlo_text.splitlines():
        if not re.search(r"\ball-reduce(-start)?\(", line):
            continue
        if any(str(vocab) in m.group(1).split(",") for m in dims.finditer(line)):
            found.append(line.strip())
    return found


def compile_sampler(config, model_config, mesh, hardware, compiler_options=None) -> dict:
    rl = config.rl
    graphdef, params = abstract_model(model_config)
    state, layout = sampler_params(params, mesh, model_config)
    b, p, t, g = rl.prompts_per_step, config.task.max_prompt_len, rl.max_new_tokens, rl.group_size
    sampling = SamplingConfig(max_new_tokens=t, eos_id=1, pad_id=0, group_size=g, temperature=rl.temperature,
                              top_k=rl.top_k, top_p=rl.top_p, vocab_size=model_config.vocab_size,
                              decode_windows=rl.sampler_windows)
    # the params are passed already in the sampling layout, as the sampler's layout copy leaves them
    sampler = make_sampler(graphdef, sampling, mesh)
    tokens = jax.ShapeDtypeStruct((b, p), jnp.int32, sharding=batch_sharding(mesh, (b, p)))
    mask = jax.ShapeDtypeStruct((b, p), jnp.bool_, sharding=batch_sharding(mesh, (b, p)))
    key = _replicated(mesh, (), jax.random.key(0).dtype)
    prompt_ids = _replicated(mesh, (b,), jnp.int32)
    knobs = tuple(_replicated(mesh, (), x.dtype) for x in knobs_from(sampling))
    n = b * g
    outputs = n * t * (4 + 1 + 4 * 3) + n * (4 + 1)  # Samples: tokens, mask, 3 float32 statistics, lengths, truncated
    started = time.perf_counter()
    compiled, memory = _compile(sampler.lower(state, tokens, mask, key, prompt_ids, knobs), compiler_options,
                                hardware["hbm_bytes"], _shard_bytes((state, tokens, mask)),
                                outputs // (mesh.shape["data"] * mesh.shape["fsdp"]))
    compile_s = time.perf_counter() - started
    hlo = compiled.as_text() if compiled is not None else ""
    vocab_lines = vocab_all_reduce_lines(hlo, model_config.vocab_size)

    mc, tensor = model_config, mesh.shape["tensor"]
    rows = b * g
    rows_chip = rows / (mesh.shape["data"] * mesh.shape["fsdp"])
    slots = p + t - 1
    itemsize = jnp.dtype(mc.compute_dtype).itemsize
    cast = lambda x: itemsize if x.ndim >= 2 else 4
    weights = sum(math.prod(x.shape) * cast(x) for x in jax.tree.leaves(params))
    kv_heads_chip = mc.num_kv_heads / tensor if mc.num_kv_heads % tensor == 0 else mc.num_kv_heads
    kv_bytes = 2 * mc.num_layers * rows_chip * slots * kv_heads_chip * mc.head_dim * itemsize
    step_bytes = weights / tensor + kv_bytes
    step_flops = (2 * (mc.layer_matmul_params + mc.hidden_size * mc.vocab_size) * rows_chip
                  + 4 * mc.num_layers * mc.num_heads * mc.head_dim * slots * rows_chip) / tensor
    compute_s, memory_s = step_flops / hardware["peak_flops"], step_bytes / hardware["hbm_bandwidth"]
    step_s = max(compute_s, memory_s)
    collectives = {op: len(re.findall(rf"\b{op}(-start)?\(", hlo)) for op in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")}
    return {
        "compile_s": round(compile_s, 1),
        "memory": memory,
        "params_layout": layout,
        "prompts": b, "group": g, "rows": rows, "cache_slots": slots,
        "sampler_vocab_all_reduce": bool(vocab_lines) if compiled is not None else None,
        "sampler_vocab_all_reduce_lines": len(vocab_lines),
        "hlo_collectives": collectives,
        "decode": {"bytes_per_step_per_chip": step_bytes, "weight_bytes_per_chip": weights / tensor, "kv_bytes_per_chip": kv_bytes,
                   "flops_per_step_per_chip": step_flops, "compute_s": compute_s, "memory_s": memory_s, "step_s": step_s,
                   "bound": "compute" if compute_s >= memory_s else "memory",
                   "roofline_tokens_per_s": rows / step_s,
                   "roofline_call_s": t * step_s,
                   "xla_cost_analysis_flops": _xla_flops(compiled),
                   "xla_note": "XLA counts the decode while_loop body once"},
        "_compiled": compiled,
    }


# ----------------------------------------------------------------------------------------------
# one entry point for the tests and the CLI


def mesh_for(topology: str, mesh_shape=None, chips=None):
    """(mesh, mesh_shape) over the topology's chips (its first `chips` of them when given, e.g. 1:
    one chip); default: all of them on fsdp."""
    devices = tpu_topology(topology).devices[:chips]
    mesh_shape = tuple(mesh_shape) if mesh_shape else (1, len(devices), 1)
    import ml_collections
    mesh = make_mesh(ml_collections.ConfigDict(dict(zip(("data", "fsdp", "tensor"), mesh_shape))), devices=devices)
    return mesh, mesh_shape


def aot_update(hf: dict, *, topology="v5e:2x2", mesh_shape=None, **config_kwargs) -> dict:
    """Compiles the RL update of model `hf` for `topology`; `compile_update`'s report (with "_compiled")."""
    mesh, mesh_shape = mesh_for(topology, mesh_shape)
    config = run_config(hf, mesh_shape=mesh_shape, **config_kwargs)
    return compile_update(config, model_config_for(config, hf), mesh, hardware_of(topology))


def _public(report: dict) -> dict:
    return {k: v for k, v in report.items() if not k.startswith("_")}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-1.5b", choices=sorted(PRESETS))
    parser.add_argument("--hf-config", help="an HF config.json (overrides --model)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--algorithm", default="grpo")
    parser.add_argument("--kl-coef", type=float, default=None, help="default: configs/default.py's")
    parser.add_argument("--micro-batch-rows", type=int, default=1, help="rows per chip per micro-batch")
    parser.add_argument("--topology", default="v5e:2x2", choices=TOPOLOGIES)
    parser.add_argument("--mesh", default="", help="data,fsdp,tensor (default 1,<chips>,1)")
    parser.add_argument("--chips", type=int, default=None, help="use only the topology's first N chips (1: one chip)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. model.remat=full")
    parser.add_argument("--search-micro-batch", action="store_true",
                        help="compile the update at 32,16,8,4,2,1 rows per chip per micro-batch")
    parser.add_argument("--no-sampler", action="store_true")
    parser.add_argument("--no-update", action="store_true")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.hf_config:
        hf, model_name = json.loads(pathlib.Path(args.hf_config).read_text()), args.hf_config
    else:
        hf, model_name = PRESETS[args.model], args.model
    try:
        mesh, mesh_shape = mesh_for(args.topology, tuple(int(x) for x in args.mesh.split(",")) if args.mesh else None,
                                    args.chips)
    except LibTPUMissing as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    hardware = hardware_of(args.topology)
    common = dict(prompts=args.prompts, group=args.group, prompt_len=args.prompt_len, new_tokens=args.new_tokens,
                  mesh_shape=mesh_shape, dtype=args.dtype, algorithm=args.algorithm, kl_coef=args.kl_coef,
                  overrides=args.set)
    config = run_config(hf, micro_batch_rows=args.micro_batch_rows, **common)
    model_config = model_config_for(config, hf)
    result = {
        "model": model_name, "topology": args.topology, "chips": mesh.size, "mesh": dict(mesh.shape),
        "device_kind": mesh.devices.flat[0].device_kind, "hardware": hardware, "jax": jax.__version__,
        "batch": {"prompts": args.prompts, "group": args.group, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens},
        "algorithm": config.rl.algorithm, "kl_coef": config.rl.kl_coef, "reference": needs_reference(config.rl),
        "overrides": args.set,
        "model_config": {k: v for k, v in dataclasses.asdict(model_config).items()},
        "peak_formula": "argument + output + temp - alias (memory_analysis, per chip)",
    }
    if not args.no_update:
        result["update"] = _public(compile_update(config, model_config, mesh, hardware))
    if args.search_micro_batch:
        search = []
        shards = mesh_shape[0] * mesh_shape[1]
        for rows in (32, 16, 8, 4, 2, 1):
            try:
                cfg = run_config(hf, micro_batch_rows=rows, **common)
            except Exception as error:  # rows that do not divide the batch
                search.append({"rows_per_chip": rows, "skipped": str(error)})
                continue
            report = compile_update(cfg, model_config_for(cfg, hf), mesh, hardware)
            mem = report["memory"]
            search.append({"rows_per_chip": rows, "micro_batches": cfg.rl.micro_batches, "temp_bytes": mem["temp_bytes"],
                           "peak_bytes": mem["peak_bytes"], "fits": mem["fits"], "spare_fraction": mem["spare_fraction"],
                           "compile_s": report["compile_s"], "roofline_step_s": report["roofline"]["step_s"]})
            print(json.dumps({"search_progress": search[-1]}), file=sys.stderr, flush=True)
        fitting = [r for r in search if r.get("fits")]
        result["micro_batch_search"] = {
            "data_parallel_chips": shards, "results": search,
            "largest_fitting_rows_per_chip": max((r["rows_per_chip"] for r in fitting), default=None),
            "largest_rows_per_chip_with_25pct_spare": max((r["rows_per_chip"] for r in fitting if r["spare_fraction"] >= 0.25), default=None),
        }
    if not args.no_sampler:
        result["sampler"] = _public(compile_sampler(config, model_config, mesh, hardware))
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
