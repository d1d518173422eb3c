"""Rollout throughput: jaxrl_self's jitted sampler vs `transformers` `generate`, same weights, same work,
next to this machine's limit measured in the same run (benchmarks/roofline.py).

A random Qwen2-shaped model is built in `transformers` from a fixed seed and the same weights are
copied into `jaxrl_self.models.Transformer`. Cases (`--cases`, all by default):

  base       `--batch` ragged, left-padded prompts (lengths drawn from [max/4, max]), `--group`
             rows each, `--new-tokens` tokens per row, EOS disabled on both sides (every row runs
             to the end); greedy and sampled (temperature 1, no truncation).
  rl         the RL shape: `--rl-prompts` prompts of exactly `--rl-prompt-len` tokens, `--rl-group`
             completions each (the peer: `generate(num_return_sequences=G)`; jaxrl_self prefills
             each prompt once), `--rl-new-tokens` tokens, sampled, EOS disabled.
  long_tail  the rl shape, but each row draws its length at its first token: `--rl-new-tokens` with
             probability `--tail-fraction`, else uniform in [1, `--tail-short`] (the EOS counted).
             jaxrl_self: a `Transformer` subclass whose logits make a row draw its length from the
             fed prompt token and then count down to EOS through reserved counter tokens
             (`CountdownTransformer`), so the rule holds for any row layout; the lengths this gives
             with the sampler's per-row keys are computed up front (`countdown_lengths`) and
             checked. The peer: a `LogitsProcessor` forcing those lengths by row. jaxrl_self runs
             twice, the static batch and continuous batching in `--slots` slots, whose tokens must
             equal the static run's. tokens/s counts the tokens each row emits.

Per case and setting the JSON holds tokens/s of each side, their ratio, the roofline tokens/s and
each side's fraction of it. The roofline (benchmarks/roofline.py, formulas in its docstring and
printed under "roofline_formulas"): matmul FLOP/s measured at every matmul shape of the case's
decode steps and prefill, the memory read bandwidth measured over a 256 MiB array; each decode step
takes at least max(bytes read / bandwidth, matmul time at the measured rates), bytes = the weights
in jaxrl_self's compute dtype + the KV cache slots each live row attends to. The limits are
measured after both sides ran (XLA's worker threads slow torch down when they run in between).

    python3 benchmarks/sampler.py                      # default size, a few minutes on 2 cores
    python3 benchmarks/sampler.py --layers 2 --hidden 128 --intermediate 256 --vocab 2000 --new-tokens 8 \
        --rl-prompts 2 --rl-group 4 --rl-prompt-len 16 --rl-new-tokens 16 --tail-short 4 --slots 3 --repeats 1   # smoke, < 1 min
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
from transformers import LogitsProcessor, LogitsProcessorList, Qwen2Config, Qwen2ForCausalLM

import roofline

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.transformer import Transformer
from jaxrl_self.sampling.processors import choose_tokens
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler, row_keys


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
    parser.add_argument("--cases", default="base,rl,long_tail", help="comma-separated: base, rl, long_tail")
    parser.add_argument("--rl-prompts", type=int, default=8, help="rl / long_tail: prompts")
    parser.add_argument("--rl-group", type=int, default=8, help="rl / long_tail: completions per prompt")
    parser.add_argument("--rl-prompt-len", type=int, default=64, help="rl / long_tail: tokens of every prompt")
    parser.add_argument("--rl-new-tokens", type=int, default=128, help="rl / long_tail: most tokens per row")
    parser.add_argument("--tail-short", type=int, default=16, help="long_tail: short rows stop within this many tokens")
    parser.add_argument("--tail-fraction", type=float, default=0.1, help="long_tail: probability that a row runs to the end")
    parser.add_argument("--slots", type=int, default=8, help="long_tail: slots of jaxrl_self's continuous batching")
    parser.add_argument("--read-mib", type=int, default=256, help="MiB of the array the read bandwidth is measured on")
    parser.add_argument("--rate-repeats", type=int, default=15, help="timed calls per matmul shape and per read (the fastest is kept)")
    return parser.parse_args()


def build_hf_model(args) -> Qwen2ForCausalLM:
    torch.manual_seed(args.seed)
    config = Qwen2Config(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(args.max_prompt + args.new_tokens, args.rl_prompt_len + args.rl_new_tokens) + 16, rms_norm_eps=1e-6,
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


EOS_ID = 1  # the long_tail case's stop token (0 is pad)
NEG = -1e9  # the logit of a token the EOS schedule rules out


def ragged_prompts(args):
    """`[B, max_prompt]` left-padded random prompts (ids 1..V-1) and their mask."""
    return make_prompts(args.batch, args.max_prompt, max(1, args.max_prompt // 4), args.vocab, args.seed)


def make_prompts(batch, max_prompt, min_prompt, vocab, seed, lowest_id=2):
    """`[B, max_prompt]` left-padded random prompts (ids lowest_id..V-1), lengths in [min_prompt, max_prompt], and the mask."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_prompt, max_prompt + 1, size=batch)
    lengths[0] = max_prompt
    tokens = np.zeros((batch, max_prompt), np.int32)
    mask = np.zeros((batch, max_prompt), bool)
    for i, n in enumerate(lengths):
        tokens[i, -n:] = rng.integers(lowest_id, vocab, size=n)
        mask[i, -n:] = True
    return tokens, mask


def make_cases(args):
    """The selected cases: name, prompts, group, new_tokens, settings and (long_tail) each row's length."""
    cases = []
    for name in args.cases.split(","):
        if name == "base":
            tokens, mask = ragged_prompts(args)
            cases.append(dict(name=name, tokens=tokens, mask=mask, group=args.group, new_tokens=args.new_tokens,
                              settings=(("greedy", 0.0), ("sampled", 1.0)), lengths=None))
        elif name in ("rl", "long_tail"):
            # long_tail prompts use ids above the countdown's counters (CountdownTransformer)
            lowest_id = args.rl_new_tokens + 1 if name == "long_tail" else 2
            tokens, mask = make_prompts(args.rl_prompts, args.rl_prompt_len, args.rl_prompt_len, args.vocab, args.seed + 1, lowest_id)
            case = dict(name=name, tokens=tokens, mask=mask, group=args.rl_group, new_tokens=args.rl_new_tokens,
                        settings=(("sampled", 1.0),), lengths=None)
            if name == "long_tail":
                case.update(tail_short=args.tail_short, tail_fraction=args.tail_fraction)
                case["lengths"] = countdown_lengths(case, args.vocab, jax.random.key(args.seed))
            cases.append(case)
        else:
            raise SystemExit(f"unknown case {name!r}: choose from base, rl, long_tail")
    return cases


class EosSchedule(LogitsProcessor):
    """The long_tail schedule for `generate`: row i's token `lengths[i] - 1` is EOS, no earlier one is."""

    def __init__(self, lengths, prompt_width):
        self.last = torch.as_tensor(np.asarray(lengths) - 1)[:, None]  # [N, 1]
        self.prompt_width = prompt_width

    def __call__(self, input_ids, scores):
        t = input_ids.shape[1] - self.prompt_width  # index of the token being chosen
        is_eos = torch.arange(scores.shape[-1])[None, :] == EOS_ID  # [1, V]
        forced = torch.where(is_eos, 0.0, NEG).to(scores.dtype)
        return torch.where(self.last == t, forced, torch.where(is_eos, torch.tensor(NEG, dtype=scores.dtype), scores))


class CountdownTransformer(Transformer):
    """`Transformer` whose logits make each row draw its length at its first token and then count
    down to EOS, so lengths follow the long_tail distribution for any row layout (continuous
    batching moves rows between slots; the rule reads only the fed token).

    Token ids: EOS = 1; counter r (r more tokens to come after it) = 1 + r for r in 1..T-1;
    prompt tokens are above T. Fed a prompt token (step 0), the row draws its length L: 1..short
    with probability (1 - tail) / short each (L = 1 is EOS at once, else counter L - 1), T with
    probability `tail`; fed counter r, it must emit counter r - 1, or EOS after counter 1. Every
    other token gets the model's logit - 1e9 (so the forward pass stays in the program and costs
    what it costs; it can never be drawn)."""

    def __init__(self, config, new_tokens, *, rngs):
        super().__init__(config, rngs=rngs)
        self.first_logits = nnx.Variable(jnp.zeros((config.vocab_size,), jnp.float32))  # step 0: the row's length
        self.new_tokens = new_tokens

    def __call__(self, tokens, positions, kv_mask, cache=None, cache_index=0):
        logits, cache = super().__call__(tokens, positions, kv_mask, cache, cache_index)  # [N, 1, V]
        if logits.shape[1] != 1:
            raise ValueError(f"the countdown expects decode steps, got logits {logits.shape}")
        fed = tokens[:, :1]  # [N, 1]
        counting = (fed >= 2) & (fed <= self.new_tokens)
        forced = jnp.where(fed == 2, EOS_ID, fed - 1)  # counter r -> r - 1, counter 1 -> EOS
        vocab = jnp.arange(logits.shape[-1])
        schedule = jnp.where(counting[..., None], jnp.where(vocab == forced[..., None], 0.0, -jnp.inf), self.first_logits[...])
        return jnp.where(jnp.isfinite(schedule), schedule, logits + NEG), cache


def with_countdown(model: Transformer, case) -> CountdownTransformer:
    """`model`'s weights in a `CountdownTransformer` for the long_tail case."""
    scheduled = nnx.eval_shape(lambda: CountdownTransformer(model.config, case["new_tokens"], rngs=nnx.Rngs(0)))
    nnx.update(scheduled, nnx.state(model))
    vocab, short, tail = np.arange(model.config.vocab_size), case["tail_short"], case["tail_fraction"]
    first = np.full(vocab.shape, -np.inf, np.float32)
    first[(vocab == EOS_ID) | ((vocab >= 2) & (vocab <= short))] = np.log((1 - tail) / short)
    first[case["new_tokens"]] = np.log(tail)
    scheduled.first_logits.value = jnp.asarray(first)
    return scheduled


def countdown_lengths(case, vocab, key):
    """The tokens each row of the long_tail case emits: `CountdownTransformer`'s step-0 draw, made
    here with the sampler's own per-row keys and token choice (temperature 1), `[B*G]` int."""
    rows = len(case["tokens"]) * case["group"]
    shell = with_countdown(Transformer(ModelConfig(vocab_size=vocab, hidden_size=8, num_layers=1, num_heads=1,
                                                   num_kv_heads=1, head_dim=8, intermediate_size=8), rngs=nnx.Rngs(0)), case)
    keys = row_keys(key, jnp.arange(len(case["tokens"])), case["group"])
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
    logits = jnp.broadcast_to(shell.first_logits[...], (rows, vocab))
    first = np.asarray(choose_tokens(step_keys, logits, jnp.float32(1.0), jnp.int32(0), jnp.float32(1.0), jnp.float32(0.0)))
    return np.where(first == EOS_ID, 1, first)


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


def time_hf(hf, case, repeats, do_sample, new_tokens=None):
    """Best (wall, CPU) seconds of `generate` and its new tokens `[B*G, <= new_tokens]`.

    Sampled: `generate(num_return_sequences=G)` (prefill on B*G rows); greedy `generate` refuses
    num_return_sequences > 1, so the prompts are repeated G times up front, as generate does internally.
    """
    group, new_tokens = case["group"], new_tokens or case["new_tokens"]
    input_ids, attention_mask = torch.from_numpy(case["tokens"]).long(), torch.from_numpy(case["mask"]).long()
    settings = dict(max_new_tokens=new_tokens, do_sample=do_sample, pad_token_id=0, eos_token_id=None)
    if do_sample:
        settings.update(temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=group)
    else:
        input_ids, attention_mask = input_ids.repeat_interleave(group, dim=0), attention_mask.repeat_interleave(group, dim=0)
    if case["lengths"] is not None:
        settings.update(eos_token_id=EOS_ID,
                        logits_processor=LogitsProcessorList([EosSchedule(case["lengths"], input_ids.shape[1])]))
    width = input_ids.shape[1]

    def generate():
        with torch.inference_mode():
            out = hf.generate(input_ids=input_ids, attention_mask=attention_mask, **settings)
        assert out.shape[1] == width + (new_tokens if case["lengths"] is None else max(case["lengths"])), out.shape
        return out

    generate()  # warm-up
    return (*best_time(generate, repeats), generate()[:, width:].numpy())


def hf_lengths(tokens):
    """Tokens each row of `generate`'s output emitted: up to and including the first EOS."""
    is_eos = tokens == EOS_ID
    return np.where(is_eos.any(1), is_eos.argmax(1) + 1, tokens.shape[1])


def time_jaxrl_self(model, case, args, temperature, slots=0):
    group, lengths = case["group"], case["lengths"]
    if lengths is not None:
        model = with_countdown(model, case)
    graphdef, state = nnx.split(model)
    config = SamplingConfig(max_new_tokens=case["new_tokens"], eos_id=-1 if lengths is None else EOS_ID, pad_id=0,
                            group_size=group, slots=slots)
    run = make_sampler(graphdef, config)
    tokens, mask, key = jnp.asarray(case["tokens"]), jnp.asarray(case["mask"]), jax.random.key(args.seed)

    def generate():
        samples = run(state, tokens, mask, key, temperature=temperature)
        samples.tokens.block_until_ready()
        if lengths is None:
            assert bool(samples.mask.all()), "a row stopped early"
        else:
            assert np.array_equal(np.asarray(samples.lengths), lengths), "jaxrl_self's lengths differ from the schedule"
        return samples

    first_call_s, _ = best_time(generate, 1)
    return (*best_time(generate, args.repeats), first_call_s, np.asarray(generate().tokens))


def case_roofline(case, shape, rates, bandwidth, dtype_bytes):
    rows = len(case["tokens"]) * case["group"]
    lengths = case["lengths"] if case["lengths"] is not None else np.full(rows, case["new_tokens"])
    return roofline.sampler_bound(shape, rates, bandwidth, case["mask"].sum(1), case["group"], lengths, dtype_bytes)


def main():
    args = parse_args()
    load_before = os.getloadavg()[0]
    hf = build_hf_model(args)
    model = to_jaxrl_self(hf, args.dtype)
    cases = make_cases(args)
    c = hf.config
    shape = roofline.ModelShape(hidden=c.hidden_size, layers=c.num_hidden_layers, heads=c.num_attention_heads,
                                kv_heads=c.num_key_value_heads, head_dim=c.hidden_size // c.num_attention_heads,
                                intermediate=c.intermediate_size, vocab=c.vocab_size, tied=False)

    result = {
        "device": str(jax.devices()[0]), "jax_dtype": args.dtype,
        "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "kv_heads": args.kv_heads,
                  "intermediate": args.intermediate, "vocab": args.vocab,
                  "params_millions": round(sum(p.numel() for p in hf.parameters()) / 1e6, 1)},
        "repeats": args.repeats,
    }
    # transformers first, then jaxrl_self, then the machine's limits: XLA's CPU worker threads slow
    # torch down if they run in between. torch's intra-op threads collapse when the cores are shared
    # with other processes, so a short probe picks the faster of 1 and --threads threads for transformers.
    probe_s = {}
    for threads in sorted({1, args.threads}):
        torch.set_num_threads(threads)
        probe_s[threads], _, _ = time_hf(hf, {**cases[0], "lengths": None}, 1, do_sample=False, new_tokens=8)
    torch_threads = min(probe_s, key=probe_s.get)
    torch.set_num_threads(torch_threads)
    result["transformers_torch_threads"] = {"used": torch_threads, "probe_s_by_threads": {str(t): round(v, 3) for t, v in probe_s.items()}}
    hf_runs = {(case["name"], name): time_hf(hf, case, args.repeats, do_sample=temperature > 0)
               for case in cases for name, temperature in case["settings"]}
    jax_runs = {(case["name"], name): time_jaxrl_self(model, case, args, temperature)
                for case in cases for name, temperature in case["settings"]}
    jax_runs.update({(case["name"], "continuous"): time_jaxrl_self(model, case, args, 1.0, slots=args.slots)
                     for case in cases if case["lengths"] is not None})

    dtype_bytes = jnp.dtype(args.dtype).itemsize
    limits_start = time.perf_counter()
    read = roofline.memory_read_bytes_per_s(args.read_mib * 2**20, repeats=args.rate_repeats)
    rates = roofline.Rates(args.dtype, repeats=args.rate_repeats)
    bounds = {case["name"]: case_roofline(case, shape, rates, read["best"], dtype_bytes) for case in cases}
    result["limits"] = {
        "read_bytes_per_s": {k: (v if k in ("nbytes", "threads") else round(v / 1e9, 2)) for k, v in read.items()},
        "read_unit": "GB/s", "matmul_gflops_per_s_by_shape_mkn": rates.table(),
        "measure_s": round(time.perf_counter() - limits_start, 1),
    }
    result["roofline_formulas"] = roofline.FORMULAS
    result["roofline_inputs"] = {"layer_matmul_params": shape.layer_matmul_params, "head_params": shape.head_params,
                                 "vector_params": shape.vector_params, "dtype_bytes": dtype_bytes,
                                 "weight_bytes_per_step": shape.step_weight_bytes(dtype_bytes),
                                 "kv_bytes_per_slot_per_row": shape.kv_bytes_per_slot(dtype_bytes),
                                 "read_bandwidth_used": "best of limits.read_bytes_per_s"}

    for case in cases:
        rows = len(case["tokens"]) * case["group"]
        lengths = case["lengths"] if case["lengths"] is not None else np.full(rows, case["new_tokens"])
        generated = int(lengths.sum())
        bound = bounds[case["name"]]
        out = {"work": {"prompts": len(case["tokens"]), "group": case["group"], "rows": rows,
                        "prompt_lengths": case["mask"].sum(1).tolist(), "new_tokens": case["new_tokens"],
                        "generated_tokens": generated},
               "roofline": {"tokens_per_s": round(bound["roofline_tokens_per_s"], 1), "seconds": round(bound["seconds"], 4),
                            "prefill_s": round(bound["prefill_s"], 4), "decode_s": round(bound["decode_s"], 4),
                            "decode_steps": bound["steps"], "memory_bound_steps": bound["memory_bound_steps"],
                            "decode_gbytes": round(bound["decode_bytes"] / 1e9, 3),
                            "decode_gflops": round(bound["decode_flops"] / 1e9, 3)}}
        if case["lengths"] is not None:
            out["work"]["rows_to_the_end"] = int((lengths == case["new_tokens"]).sum())
            out["work"]["short_row_lengths"] = sorted(lengths[lengths < case["new_tokens"]].tolist())
        for name, temperature in case["settings"]:
            hf_s, hf_cpu_s, hf_tokens = hf_runs[(case["name"], name)]
            jax_s, jax_cpu_s, first_call_s, jax_tokens = jax_runs[(case["name"], name)]
            if case["lengths"] is not None:
                assert np.array_equal(hf_lengths(hf_tokens), lengths), "generate's lengths differ from the schedule"
            entry = {
                "transformers_tokens_per_s": round(generated / hf_s, 1),
                "jaxrl_self_tokens_per_s": round(generated / jax_s, 1),
                "speedup": round(hf_s / jax_s, 2),
                "roofline_tokens_per_s": round(bound["roofline_tokens_per_s"], 1),
                "transformers_fraction_of_roofline": round(bound["seconds"] / hf_s, 3),
                "jaxrl_self_fraction_of_roofline": round(bound["seconds"] / jax_s, 3),
                "transformers_s": round(hf_s, 3),
                "jaxrl_self_s": round(jax_s, 3),
                "jaxrl_self_compile_s": round(first_call_s - jax_s, 2),
                "transformers_cpu_s": round(hf_cpu_s, 3),
                "jaxrl_self_cpu_s": round(jax_cpu_s, 3),
                "speedup_cpu_time": round(hf_cpu_s / jax_cpu_s, 2),
            }
            if temperature == 0.0 and args.dtype == "float32":
                entry["greedy_rows_identical"] = int(sum(np.array_equal(a, b) for a, b in zip(hf_tokens, jax_tokens)))
            if case["lengths"] is not None:  # continuous batching on the same prompts and key
                cont_s, cont_cpu_s, cont_first_s, cont_tokens = jax_runs[(case["name"], "continuous")]
                entry["continuous"] = {
                    "slots": args.slots, "tokens_per_s": round(generated / cont_s, 1),
                    "speedup_over_static": round(jax_s / cont_s, 2), "speedup_over_transformers": round(hf_s / cont_s, 2),
                    "fraction_of_roofline": round(bound["seconds"] / cont_s, 3), "s": round(cont_s, 3),
                    "cpu_s": round(cont_cpu_s, 3), "compile_s": round(cont_first_s - cont_s, 2),
                    "tokens_identical_to_static": bool(np.array_equal(cont_tokens, jax_tokens)),
                }
            out[name] = entry
        result[case["name"]] = out
    result["load_average_1min"] = {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
