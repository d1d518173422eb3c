"""Rollout throughput: jaxrl_self's jitted sampler vs `transformers` `generate`, same weights, same work.

A random Qwen2-shaped model is built in `transformers` from a fixed seed and the same weights are
copied into `jaxrl_self.models.Transformer`. Both generate `--new-tokens` tokens for the same batch
of ragged, left-padded prompts (EOS disabled on both sides so every row runs to the end), greedy
and sampled (temperature 1, no truncation). Prints ONE JSON object: tokens/s for each side, the
jaxrl_self compile time (reported separately, excluded from tokens/s), and the speed-up ratios.

    python3 benchmarks/sampler.py                      # default size, < 3 min on 2 cores
    python3 benchmarks/sampler.py --layers 2 --hidden 256 --vocab 8000   # quicker
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from transformers import Qwen2Config, Qwen2ForCausalLM

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.transformer import Transformer
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=1408)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=8, help="prompts per batch")
    parser.add_argument("--group", type=int, default=1, help="completions per prompt (jaxrl_self shares one prefill per prompt)")
    parser.add_argument("--max-prompt", type=int, default=64, help="longest prompt; lengths are drawn from [max/4, max]")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting (the best is kept)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="jaxrl_self compute dtype (HF runs fp32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch threads to try besides 1 (a short probe picks the faster)")
    return parser.parse_args()


def build_hf_model(args) -> Qwen2ForCausalLM:
    torch.manual_seed(args.seed)
    config = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_prompt + args.new_tokens + 16, rms_norm_eps=1e-6,
        rope_theta=10000.0, tie_word_embeddings=False, pad_token_id=0, eos_token_id=None,
    )
    return Qwen2ForCausalLM(config).eval()


def to_jaxrl_self(hf: Qwen2ForCausalLM, dtype: str) -> Transformer:
    """Copies the HF weights into a jaxrl_self Transformer (linear `[out, in]` -> `[in, out]`, heads split)."""
    c = hf.config
    heads, kv_heads, head_dim = c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads
    config = ModelConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, num_layers=c.num_hidden_layers, num_heads=heads,
        num_kv_heads=kv_heads, head_dim=head_dim, intermediate_size=c.intermediate_size,
        rope_theta=c.rope_parameters["rope_theta"], rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False,
        attention_bias=True, max_position_embeddings=c.max_position_embeddings, dtype=dtype, architecture="qwen2",
    )
    w = {k: v.detach().float().numpy() for k, v in hf.state_dict().items()}
    model = nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0)))
    e = c.hidden_size
    model.embed_tokens.value = jnp.asarray(w["model.embed_tokens.weight"])
    model.norm.value = jnp.asarray(w["model.norm.weight"])
    model.lm_head.value = jnp.asarray(w["lm_head.weight"].T)
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        attn = layer.self_attn
        attn.q_proj.value = jnp.asarray(w[p + "self_attn.q_proj.weight"].T.reshape(e, heads, head_dim))
        attn.k_proj.value = jnp.asarray(w[p + "self_attn.k_proj.weight"].T.reshape(e, kv_heads, head_dim))
        attn.v_proj.value = jnp.asarray(w[p + "self_attn.v_proj.weight"].T.reshape(e, kv_heads, head_dim))
        attn.o_proj.value = jnp.asarray(w[p + "self_attn.o_proj.weight"].T.reshape(heads, head_dim, e))
        attn.q_bias.value = jnp.asarray(w[p + "self_attn.q_proj.bias"].reshape(heads, head_dim))
        attn.k_bias.value = jnp.asarray(w[p + "self_attn.k_proj.bias"].reshape(kv_heads, head_dim))
        attn.v_bias.value = jnp.asarray(w[p + "self_attn.v_proj.bias"].reshape(kv_heads, head_dim))
        layer.input_layernorm.value = jnp.asarray(w[p + "input_layernorm.weight"])
        layer.post_attention_layernorm.value = jnp.asarray(w[p + "post_attention_layernorm.weight"])
        layer.mlp.gate_proj.value = jnp.asarray(w[p + "mlp.gate_proj.weight"].T)
        layer.mlp.up_proj.value = jnp.asarray(w[p + "mlp.up_proj.weight"].T)
        layer.mlp.down_proj.value = jnp.asarray(w[p + "mlp.down_proj.weight"].T)
    return model


def ragged_prompts(args):
    """`[B, max_prompt]` left-padded random prompts (ids 1..V-1) and their mask."""
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(max(1, args.max_prompt // 4), args.max_prompt + 1, size=args.batch)
    lengths[0] = args.max_prompt
    tokens = np.zeros((args.batch, args.max_prompt), np.int32)
    mask = np.zeros((args.batch, args.max_prompt), bool)
    for i, n in enumerate(lengths):
        tokens[i, -n:] = rng.integers(1, args.vocab, size=n)
        mask[i, -n:] = True
    return tokens, mask


def best_time(fn, repeats):
    """Fastest wall-clock and fastest process-CPU time over `repeats` calls, in seconds.

    The minimum is the run least disturbed by other load; CPU time (all threads of this process)
    is the work done, a steadier figure than wall time when the cores are shared.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def time_hf(hf, tokens, mask, args, do_sample):
    """Best (wall, CPU) seconds of `generate` and its new tokens `[B*G, new_tokens]`.

    Prompts are repeated G times up front, as `generate(num_return_sequences=G)` does internally
    (prefill on B*G rows); greedy `generate` refuses num_return_sequences > 1.
    """
    input_ids = torch.from_numpy(tokens).long().repeat_interleave(args.group, dim=0)
    attention_mask = torch.from_numpy(mask).long().repeat_interleave(args.group, dim=0)
    settings = dict(max_new_tokens=args.new_tokens, do_sample=do_sample, pad_token_id=0, eos_token_id=None)
    if do_sample:
        settings.update(temperature=1.0, top_k=0, top_p=1.0)

    def generate():
        with torch.inference_mode():
            out = hf.generate(input_ids=input_ids, attention_mask=attention_mask, **settings)
        assert out.shape[1] == args.max_prompt + args.new_tokens, out.shape
        return out

    generate()  # warm-up
    return (*best_time(generate, args.repeats), generate()[:, args.max_prompt:].numpy())


def time_jaxrl_self(model, tokens, mask, args, temperature):
    graphdef, state = nnx.split(model)
    config = SamplingConfig(max_new_tokens=args.new_tokens, eos_id=-1, pad_id=0, group_size=args.group)
    run = make_sampler(graphdef, config)
    tokens, mask, key = jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(args.seed)

    def generate():
        samples = run(state, tokens, mask, key, temperature=temperature)
        samples.tokens.block_until_ready()
        assert bool(samples.mask.all()), "a row stopped early"
        return samples

    first_call_s, _ = best_time(generate, 1)
    return (*best_time(generate, args.repeats), first_call_s, np.asarray(generate().tokens))


def main():
    args = parse_args()
    load_before = os.getloadavg()[0]
    hf = build_hf_model(args)
    model = to_jaxrl_self(hf, args.dtype)
    tokens, mask = ragged_prompts(args)
    generated = args.batch * args.group * args.new_tokens

    result = {
        "device": str(jax.devices()[0]), "jax_dtype": args.dtype,
        "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "kv_heads": args.kv_heads,
                  "intermediate": args.intermediate, "vocab": args.vocab,
                  "params_millions": round(sum(p.numel() for p in hf.parameters()) / 1e6, 1)},
        "work": {"batch": args.batch, "group": args.group, "prompt_lengths": mask.sum(1).tolist(), "repeats": args.repeats,
                 "new_tokens": args.new_tokens, "generated_tokens": generated},
    }
    # transformers first, then jaxrl_self: XLA's CPU worker threads slow torch down if they run in between.
    # torch's intra-op threads collapse when the cores are shared with other processes, so a short probe
    # picks the faster of 1 and --threads threads for transformers.
    probe = argparse.Namespace(**{**vars(args), "new_tokens": 8, "repeats": 1})
    probe_s = {}
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        probe_s[threads], _, _ = time_hf(hf, tokens, mask, probe, do_sample=False)
    torch_threads = min(probe_s, key=probe_s.get)
    torch.set_num_threads(torch_threads)
    result["transformers_torch_threads"] = {"used": torch_threads, "probe_s_by_threads": {str(t): round(v, 3) for t, v in probe_s.items()}}
    settings = (("greedy", 0.0), ("sampled", 1.0))
    hf_runs = {name: time_hf(hf, tokens, mask, args, do_sample=temperature > 0) for name, temperature in settings}
    for name, temperature in settings:
        hf_s, hf_cpu_s, hf_tokens = hf_runs[name]
        jax_s, jax_cpu_s, first_call_s, jax_tokens = time_jaxrl_self(model, tokens, mask, args, temperature)
        entry = {
            "transformers_tokens_per_s": round(generated / hf_s, 1),
            "jaxrl_self_tokens_per_s": round(generated / jax_s, 1),
            "speedup": round(hf_s / jax_s, 2),
            "transformers_s": round(hf_s, 3),
            "jaxrl_self_s": round(jax_s, 3),
            "jaxrl_self_compile_s": round(first_call_s - jax_s, 2),
            "transformers_cpu_s": round(hf_cpu_s, 3),
            "jaxrl_self_cpu_s": round(jax_cpu_s, 3),
            "speedup_cpu_time": round(hf_cpu_s / jax_cpu_s, 2),
        }
        if temperature == 0.0 and args.dtype == "float32":
            entry["greedy_rows_identical"] = int(sum(np.array_equal(a, b) for a, b in zip(hf_tokens, jax_tokens)))
        result[name] = entry
    result["load_average_1min"] = {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
