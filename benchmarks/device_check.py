"""Device check: the machine's measured limits, then the sampler's and the GRPO update's speed
against them, with the project's own code on a random Qwen2-0.5B-shaped model.

    python benchmarks/device_check.py            # on the GPU machine (through benchmarks/device_check.sh)
    python benchmarks/device_check.py --small    # same code path, tiny shapes, CPU, < 1 min on 2 cores

Prints ONE JSON object; with $OUT set, also writes it to $OUT/device_check.json, rewritten after
each section, so a run cut short still leaves the sections it finished ("sections_done").

Nothing is downloaded: the model is `init_model` of `model_config_from_hf(QWEN2_05B)` (the shape of
Qwen2-0.5B: vocab 151936, hidden 896, 24 layers, 14 heads, 2 kv heads, head_dim 64, mlp 4864,
tied embeddings, q/k/v biases, rope_theta 1e6), float32 parameters, bfloat16 compute
(`config.model.dtype`). The RL settings come from `build_config("configs/default.py", overrides)`
(which runs `validate`): GRPO, k3 KL (kl_coef 0.04), temperature 1, no top-k/top-p.

Figures:
  limits.matmul_flops_per_s: bf16 [n, n] @ [n, n] products (n = 8192), 2 n^3 FLOPs each, mean of
    back-to-back calls after a warm-up.
  limits.hbm_bytes_per_s: `x + 1` over a float32 array of 4 GiB (bytes read + written) and
    `sum(x)` (bytes read), likewise timed.
  limits.nominal: the vendor's dense bf16 FLOP/s and HBM bandwidth for the device kind (H200 SXM:
    989e12, 4.8e12), null for other kinds.
  sampler: `make_sampler` on `sample_prompts` prompts of `prompt_len` random tokens (no padding),
    `group` completions each (rows = sample_prompts * group), `new_tokens` tokens per row.
    eos_id is -1, an id no sampled token can have, so every row decodes every step (checked).
    tokens_per_s = rows * new_tokens / seconds of one whole sampler call (the best of `repeats`
    after a compile call; the call includes the one prefill of the prompts).
    Roofline: each decode step must read every weight once (matrices in the compute dtype, as
    `cast_for_compute` stores them; the tied embedding is read whole as the output head) plus the
    KV cache: 2 (k, v) * layers * rows * slots * kv_heads * head_dim * dtype bytes, with
    slots = prompt_len + t at step t, averaged over the steps ("filled"). The implementation
    attends over its whole static cache, slots = prompt_len + new_tokens - 1 at every step
    ("static_cache"). roofline_tokens_per_s = rows / ((weight_bytes + kv_bytes) / bandwidth), at the
    nominal and at the measured copy bandwidth; fraction = tokens_per_s / roofline_tokens_per_s.
  grpo_update: `make_rl_update` on one train batch of rows = train_prompts * group rows of
    prompt_len + new_tokens tokens (all valid), in `micro_batches` micro-batches, one AdamW step;
    seconds = the best of `repeats` calls after a compile call. Analytic FLOPs:
      6 * (layer_matmul_params * S + E*V * T) * rows + 12 * layers * rows * heads * S^2 * head_dim,
    S = prompt_len + new_tokens, T = new_tokens, with layer_matmul_params = layers * (E*H*D +
    2*E*K*D + H*D*E + 3*E*F) (`ModelConfig.layer_matmul_params`; the output head runs at completion
    positions only). The attention term counts QK^T and PV
    (2 * 2 * S^2 * D per head and row forward, x3 for forward + backward) over the full S x S
    square the implementation computes (masked, not skipped). MFU = FLOPs / seconds / peak, with
    peak the nominal and the measured matmul FLOP/s.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.config import build_config
from jaxrl_self.models.hf_config import model_config_from_hf
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.train.rl_step import make_rl_update
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "default.py")
NOMINAL = {"H200": {"bf16_flops_per_s": 989e12, "hbm_bytes_per_s": 4.8e12}}  # device_kind substring -> vendor figures

QWEN2_05B = {  # Qwen2-0.5B's config.json, the fields model_config_from_hf reads
    "model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864,
    "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "hidden_act": "silu",
    "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 32768,
}
TINY_QWEN2 = {**QWEN2_05B, "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}


@dataclasses.dataclass(frozen=True)
class Sizes:
    hf_config: dict
    sample_prompts: int  # prompts per sampler call
    group: int  # completions per prompt
    prompt_len: int
    new_tokens: int
    train_prompts: int  # the update's batch: train_prompts * group rows
    micro_batches: int
    matmul_n: int
    copy_floats: int  # float32 elements of the bandwidth array
    calls: int  # back-to-back calls per machine-limit measurement
    repeats: int  # timed sampler / update calls (the best is kept)


FULL = Sizes(QWEN2_05B, sample_prompts=64, group=8, prompt_len=256, new_tokens=256, train_prompts=8, micro_batches=4,
             matmul_n=8192, copy_floats=2**30, calls=20, repeats=3)
SMALL = Sizes(TINY_QWEN2, sample_prompts=4, group=4, prompt_len=16, new_tokens=16, train_prompts=2, micro_batches=2,
              matmul_n=512, copy_floats=2**22, calls=5, repeats=2)


def seconds_per_call(fn, arg, calls):
    """Mean seconds of `fn(arg)` over `calls` back-to-back calls, after one warm-up (compile) call."""
    jax.block_until_ready(fn(arg))
    start = time.perf_counter()
    for _ in range(calls):
        out = fn(arg)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def first_and_best(fn, repeats):
    """(seconds of the first call, incl. compilation; best seconds of `repeats` further calls). fn must block."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, min(times)


def machine_limits(sizes: Sizes, nominal):
    """Measured bf16 matmul FLOP/s and HBM bandwidth (copy: read + write; sum: read), next to `nominal`."""
    n = sizes.matmul_n
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16) / math.sqrt(n)
    matmul_s = seconds_per_call(jax.jit(lambda a: a @ b), a, sizes.calls)
    x = jnp.ones((sizes.copy_floats,), jnp.float32)  # [copy_floats]
    copy_s = seconds_per_call(jax.jit(lambda x: x + 1.0), x, sizes.calls)
    sum_s = seconds_per_call(jax.jit(jnp.sum), x, sizes.calls)
    return {
        "matmul_n": n, "matmul_s": matmul_s, "matmul_flops_per_s": 2 * n**3 / matmul_s,
        "array_bytes": x.nbytes, "copy_bytes_per_s": 2 * x.nbytes / copy_s, "sum_bytes_per_s": x.nbytes / sum_s,
        "nominal": nominal,
    }


def rl_config(sizes: Sizes):
    """configs/default.py with the check's sizes and bf16 compute, validated by build_config."""
    overrides = {
        "model.dtype": "bfloat16", "model.max_position_embeddings": sizes.prompt_len + sizes.new_tokens,
        "task.max_prompt_len": sizes.prompt_len, "rl.max_new_tokens": sizes.new_tokens, "rl.group_size": sizes.group,
        "rl.prompts_per_step": sizes.train_prompts, "rl.micro_batches": sizes.micro_batches,
    }
    return build_config(DEFAULT_CONFIG, [f"--config.{key}={value}" for key, value in overrides.items()])


def roofline(rows, bytes_per_step, bandwidth):
    return None if bandwidth is None else rows / (bytes_per_step / bandwidth)


def sampler_check(sizes: Sizes, config, mc, graphdef, params, limits):
    """Decode tokens/s of `make_sampler` and its fraction of the HBM roofline (module docstring)."""
    rows, steps, prompt_len = sizes.sample_prompts * sizes.group, sizes.new_tokens, sizes.prompt_len
    rl = config.rl
    sampler = make_sampler(graphdef, SamplingConfig(max_new_tokens=steps, eos_id=-1, pad_id=0, group_size=sizes.group,
                                                    temperature=rl.temperature, top_k=rl.top_k, top_p=rl.top_p,
                                                    vocab_size=mc.vocab_size))
    rng = np.random.default_rng(0)
    prompt_tokens = jnp.asarray(rng.integers(1, mc.vocab_size, (sizes.sample_prompts, prompt_len)), jnp.int32)  # [B, P]
    prompt_mask = jnp.ones((sizes.sample_prompts, prompt_len), bool)  # [B, P]
    key = jax.random.key(0)
    samples = None

    def call():
        nonlocal samples
        samples = jax.block_until_ready(sampler(params, prompt_tokens, prompt_mask, key))

    first_s, best_s = first_and_best(call, sizes.repeats)
    assert bool(samples.mask.all()), "a row stopped before new_tokens: eos_id -1 should never be sampled"
    compute_bytes = jnp.dtype(mc.dtype).itemsize
    weight_bytes = sum(x.size * (compute_bytes if x.ndim >= 2 else x.dtype.itemsize) for x in jax.tree.leaves(params))
    kv_bytes_per_slot = 2 * mc.num_layers * rows * mc.num_kv_heads * mc.head_dim * compute_bytes
    step_bytes = {"filled": weight_bytes + kv_bytes_per_slot * (prompt_len + (steps - 1) / 2),
                  "static_cache": weight_bytes + kv_bytes_per_slot * (prompt_len + steps - 1)}
    tokens_per_s = rows * steps / best_s
    bandwidths = {"nominal": (limits["nominal"] or {}).get("hbm_bytes_per_s"), "measured_copy": limits["copy_bytes_per_s"]}
    rooflines = {kv: {bw: roofline(rows, b, bandwidth) for bw, bandwidth in bandwidths.items()} for kv, b in step_bytes.items()}
    return {
        "prompts": sizes.sample_prompts, "group": sizes.group, "rows": rows, "prompt_len": prompt_len, "new_tokens": steps,
        "seconds": best_s, "compile_s": first_s - best_s, "tokens_per_s": tokens_per_s, "compilations": sampler.compilations(),
        "weight_bytes": weight_bytes, "bytes_per_step": step_bytes, "roofline_tokens_per_s": rooflines,
        "fraction_of_roofline": {kv: {bw: None if r is None else tokens_per_s / r for bw, r in by_bw.items()}
                                 for kv, by_bw in rooflines.items()},
    }


def update_check(sizes: Sizes, config, mc, graphdef, params, limits):
    """Seconds and MFU of one `make_rl_update` call (one GRPO optimizer step) (module docstring)."""
    rl = config.rl
    rows, prompt_len, steps = sizes.train_prompts * sizes.group, sizes.prompt_len, sizes.new_tokens
    optimizer = make_optimizer(rl.learning_rate, rl.steps * rl.epochs * rl.minibatches, rl.warmup_steps,
                               weight_decay=rl.weight_decay, max_grad_norm=rl.max_grad_norm)
    # the reference params are read only by the batch builder; the update reads its ref_logp
    state = init_train_state(params, optimizer, config.seed, with_reference=False)
    rng = np.random.default_rng(1)
    batch = {
        "prompt_tokens": rng.integers(1, mc.vocab_size, (rows, prompt_len)).astype(np.int32),  # [N, P]
        "prompt_mask": np.ones((rows, prompt_len), bool),  # [N, P]
        "completion_tokens": rng.integers(1, mc.vocab_size, (rows, steps)).astype(np.int32),  # [N, T]
        "completion_mask": np.ones((rows, steps), bool),  # [N, T]
        "advantages": rng.standard_normal(rows).astype(np.float32),  # [N]
        "ref_logp": np.full((rows, steps), -math.log(mc.vocab_size), np.float32),  # [N, T]
    }
    # commit every leaf to the device, as the update's outputs are (else a second compilation)
    state, batch = jax.device_put((state, batch), jax.devices()[0])
    update = make_rl_update(graphdef, optimizer, rl)
    key = jax.random.key(0)
    metrics = None

    def call():  # the update donates its state: each call takes the previous call's
        nonlocal state, metrics
        state, metrics = jax.block_until_ready(update(state, batch, key))

    first_s, best_s = first_and_best(call, sizes.repeats)
    seq = prompt_len + steps
    # the output head forms logits at completion positions only (train.policy)
    matmul_flops = 6 * (mc.layer_matmul_params * seq + mc.hidden_size * mc.vocab_size * steps) * rows
    attention_flops = 12 * mc.num_layers * rows * mc.num_heads * seq**2 * mc.head_dim
    flops_per_s = (matmul_flops + attention_flops) / best_s
    nominal_peak = (limits["nominal"] or {}).get("bf16_flops_per_s")
    return {
        "rows": rows, "tokens_per_row": seq, "micro_batches": rl.micro_batches, "algorithm": rl.algorithm,
        "seconds": best_s, "compile_s": first_s - best_s, "compilations": update._cache_size(),
        "loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]),
        "layer_matmul_params": mc.layer_matmul_params, "matmul_flops": matmul_flops, "attention_flops": attention_flops,
        "flops_per_s": flops_per_s, "train_tokens_per_s": rows * seq / best_s,
        "mfu": {"nominal": None if nominal_peak is None else flops_per_s / nominal_peak,
                "measured_matmul": flops_per_s / limits["matmul_flops_per_s"]},
    }


def write(result):
    """Prints nothing; (re)writes $OUT/device_check.json when $OUT is set."""
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "device_check.json"), "w") as f:
            json.dump(result, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny shapes: the same code path in under a minute on CPU")
    sizes = SMALL if parser.parse_args().small else FULL
    device = jax.devices()[0]
    nominal = next((v for kind, v in NOMINAL.items() if kind in device.device_kind), None)
    config = rl_config(sizes)
    mc = model_config_from_hf(sizes.hf_config, dtype=config.model.dtype, source="device_check")
    result = {"jax": jax.__version__, "backend": jax.default_backend(), "device_kind": device.device_kind,
              "devices": [str(d) for d in jax.devices()], "small": sizes is SMALL,
              "model": {**sizes.hf_config, "dtype": mc.dtype}, "sections_done": []}
    write(result)
    started = time.perf_counter()
    graphdef, params = init_model(mc, config.seed)

    def done(name, section):
        result[name] = section
        result["sections_done"].append(name)
        result["elapsed_s"] = time.perf_counter() - started
        write(result)

    done("limits", machine_limits(sizes, nominal))
    done("sampler", sampler_check(sizes, config, mc, graphdef, params, result["limits"]))
    done("grpo_update", update_check(sizes, config, mc, graphdef, params, result["limits"]))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
