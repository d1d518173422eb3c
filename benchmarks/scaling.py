"""Step time and per-device memory of the GRPO update against the mesh shape (data, fsdp, tensor).

On a CPU machine the devices are forced host devices (`--devices`, set before JAX is imported):
they share the same cores, so step times show the cost of partitioning and collectives, not a
speed-up; the memory figures are real (bytes each device holds, from the arrays' shardings, and
XLA's compiled temp-buffer estimate per device). On a GPU/TPU host the real devices are used.
Prints ONE JSON object.

    python3 benchmarks/scaling.py                         # 8 forced CPU devices, 5 mesh shapes, ~2-4 min on 2 cores
    python3 benchmarks/scaling.py --meshes 8x1x1,1x8x1 --hidden 256 --layers 4
"""
from __future__ import annotations

import argparse
import os
import sys


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8, help="forced host devices on CPU")
    parser.add_argument("--meshes", default="1x1x1,8x1x1,1x8x1,2x2x2,1x4x2", help="data x fsdp x tensor, comma separated")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--intermediate", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--rows", type=int, default=32, help="completions per GRPO batch")
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mesh (the median is reported)")
    return parser.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None and os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ARGS.devices}"

import json
import pathlib
import statistics
import time

import jax
import ml_collections
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from jaxrl_self.config import load_config_file
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.parallel import bytes_per_device, make_mesh, shard_batch, shard_state
from jaxrl_self.train.rl_step import make_rl_update
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer


def grpo_batch(args, rng):
    """A GRPO train batch of `args.rows` rows with ragged completions, advantages and reference log-probs."""
    rows, p, t = args.rows, args.prompt_len, args.new_tokens
    return {
        "prompt_tokens": rng.integers(0, args.vocab, (rows, p)).astype(np.int32),
        "prompt_mask": np.arange(p)[None] >= rng.integers(0, p // 2, (rows, 1)),
        "completion_tokens": rng.integers(0, args.vocab, (rows, t)).astype(np.int32),
        "completion_mask": np.arange(t)[None] < rng.integers(1, t + 1, (rows, 1)),
        "advantages": rng.normal(size=rows).astype(np.float32),
        "ref_logp": (-6.0 + 0.1 * rng.normal(size=(rows, t))).astype(np.float32),
    }


def measure(shape, args, state0, batch, update) -> dict:
    devices = jax.devices()[: int(np.prod(shape))]
    mesh = make_mesh(ml_collections.ConfigDict(dict(zip(("data", "fsdp", "tensor"), shape))), devices=devices)
    state, sharded_batch, key = shard_state(state0, mesh), shard_batch(batch, mesh), jax.random.key(0)
    started = time.perf_counter()
    compiled = update.lower(state, sharded_batch, key).compile()
    compile_s = time.perf_counter() - started
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        new_state, metrics = compiled(state, sharded_batch, key)
        jax.block_until_ready((new_state, metrics))
        times.append(time.perf_counter() - started)
    memory = compiled.memory_analysis()
    per_device = {name: max(bytes_per_device(tree).values()) for name, tree in
                  (("params", state.params), ("opt_state", state.opt_state), ("state", state))}
    total_state = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
    return {
        "mesh": {"data": shape[0], "fsdp": shape[1], "tensor": shape[2]}, "devices": len(devices),
        "compile_s": round(compile_s, 2), "step_s": round(statistics.median(times), 4),
        "tokens_per_s": round(args.rows * (args.prompt_len + args.new_tokens) / statistics.median(times), 1),
        "loss": float(metrics["loss"]),
        "bytes_per_device": {f"{name}_max": value for name, value in per_device.items()},
        "state_fraction_per_device": round(per_device["state"] / total_state, 4),
        "xla_temp_bytes_per_device": None if memory is None else int(memory.temp_size_in_bytes),
    }


def main(args):
    model_config = ModelConfig(vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                               num_kv_heads=args.kv_heads, head_dim=args.head_dim, intermediate_size=args.intermediate,
                               max_position_embeddings=args.prompt_len + args.new_tokens)
    graphdef, params = init_model(model_config, seed=0)
    rl = load_config_file(pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py").rl
    optimizer = make_optimizer(1e-4, 10)
    state0 = init_train_state(params, optimizer, 0, with_reference=True)
    batch = grpo_batch(args, np.random.default_rng(0))
    update = make_rl_update(graphdef, optimizer, rl)
    shapes = [tuple(int(n) for n in text.split("x")) for text in args.meshes.split(",")]
    results = [measure(shape, args, state0, batch, update) for shape in shapes]
    base = next((r for r in results if r["devices"] == 1), results[0])
    for r in results:
        r["step_time_vs_first"] = round(r["step_s"] / base["step_s"], 3)
        r["loss_diff_vs_first"] = abs(r["loss"] - base["loss"])
    print(json.dumps({
        "benchmark": "grpo_update_scaling", "platform": jax.devices()[0].platform, "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(), "cpu_cores": os.cpu_count(),
        "model": {"params": sum(x.size for x in jax.tree.leaves(params)), "hidden": args.hidden, "layers": args.layers,
                  "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
                  "intermediate": args.intermediate, "vocab": args.vocab},
        "batch": {"rows": args.rows, "tokens_per_row": args.prompt_len + args.new_tokens},
        "state_bytes_total": sum(leaf.nbytes for leaf in jax.tree.leaves(state0)),
        "results": results,
        "note": "forced CPU devices share the host's cores: step times measure partitioning overhead, not speed-up",
    }, indent=1))


if __name__ == "__main__":
    main(ARGS)
