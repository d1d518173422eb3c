"""One full GRPO iteration (sample + reward + update): jaxrl_self vs TRL's GRPOTrainer, same work.

A tiny random Qwen2 model and a word-level tokenizer are built in code and saved with
`save_pretrained` to a temporary directory (nothing is downloaded); TRL loads it with
transformers, jaxrl_self with `jaxrl_self.models.checkpoint_io.load_hf_checkpoint`. Both sides
run the same prompts, group size, generation length (EOS suppressed, so every completion has
exactly `--new-tokens` tokens), the same Python reward function (occurrences of "7" in the decoded
completion), GRPO with group-normalised advantages, the `seq_mean_token_mean` loss, no KL, one
optimizer step per rollout, AdamW (constant lr, no weight decay) with global-norm clipping 1.0,
on CPU. TRL runs first (XLA's CPU threads slow torch down when interleaved).

With `--kl-coef` > 0 both sides add the k3 KL to a frozen reference (TRL: `beta`, its reference
model; jaxrl_self: the reference params in the train state).

Prints ONE JSON object: seconds per iteration for each side (mean over `--iters` timed iterations
after `--warmup` warm-up iterations), their ratio (TRL / jaxrl_self), and jaxrl_self's compile
time (first iteration minus a warm one), reported separately; then the compute roofline of the
iteration and each side's fraction of it (benchmarks/roofline.py, formulas in its docstring and
under "roofline_formulas"), with this machine's matmul FLOP/s at the shapes of the work and its
memory read bandwidth measured in the same run, after both sides: sampling bound (prefill of the
B prompts once; each decode step max(weights + KV read / bandwidth, matmul time)) + (1 with a KL
reference) + 3 (forward + backward) forwards of every row at the measured matmul rates, averaged
over the timed iterations' prompt lengths. The reward and the batch building count nothing.

    pip install -e '.[bench]'
    python3 benchmarks/grpo_step.py                     # ~4 min on 2 cores (mostly TRL and XLA compile)
    python3 benchmarks/grpo_step.py --issue-shape       # the 39M model, 8 prompts x 8 x 64 tokens, k3 KL (issue 32)
    python3 benchmarks/grpo_step.py --issue-shape --logprob-chunk 0   # the learner's output projection all at once
    python3 benchmarks/grpo_step.py --layers 2 --iters 3   # quicker
    python3 benchmarks/grpo_step.py --layers 1 --hidden 64 --intermediate 128 --prompts 2 --group 2 \
        --new-tokens 8 --warmup 1 --iters 1 --kl-coef 0.04 --read-mib 64   # smoke, < 1 min
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from jaxrl_self.config import load_config_file
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.models.checkpoint_io import load_hf_checkpoint
from jaxrl_self.models.transformer import model_graphdef
from jaxrl_self.models.tokenizer import pad_batch
from jaxrl_self.rewards.host import make_host_reward_fn
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.train.rl_step import make_batch_builder, make_reward_scorer, make_rl_update
from jaxrl_self.train.state import init_train_state

import profile_summary
import roofline

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "default.py")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per iteration (B)")
    parser.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    parser.add_argument("--max-prompt", type=int, default=16, help="longest prompt in tokens; lengths drawn from [4, max]")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations per side")
    parser.add_argument("--iters", type=int, default=5, help="timed iterations per side")
    parser.add_argument("--learning-rate", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--tied", action="store_true", help="tie the output head to the embedding")
    parser.add_argument("--kl-coef", type=float, default=0.0, help="k3 KL to a frozen reference (TRL's beta); 0: none")
    parser.add_argument("--min-prompt", type=int, default=4, help="shortest prompt in tokens")
    parser.add_argument("--issue-shape", action="store_true",
                        help="issue 32's shape: 39M Qwen2 (hidden 512, 8 layers, 8 heads, 2 kv heads, mlp 1408, vocab 32000, "
                             "tied), 8 prompts of 64 tokens x G=8, 64 new tokens, k3 KL 0.04 (overrides those flags)")
    parser.add_argument("--read-mib", type=int, default=256, help="MiB of the array the read bandwidth is measured on")
    parser.add_argument("--rate-repeats", type=int, default=15, help="timed calls per matmul shape and per read (the fastest is kept)")
    parser.add_argument("--profile", default="", help="directory: trace one more jaxrl_self iteration with jax.profiler "
                        "and report its time by XLA program and operation (benchmarks/profile_summary.py)")
    parser.add_argument("--skip-trl", action="store_true", help="time jaxrl_self only (no TRL figures)")
    parser.add_argument("--logprob-chunk", type=int, default=-1,
                        help="jaxrl_self's model.logprob_chunk: completion positions per chunk of the learner's output "
                             "projection, recomputed in the backward pass (0: all at once; -1: auto, the default: "
                             "8 on CPU with a vocabulary of 4096 or more)")
    args = parser.parse_args()
    if args.issue_shape:
        args.__dict__.update(hidden=512, layers=8, heads=8, kv_heads=2, intermediate=1408, vocab=32000, tied=True,
                             prompts=8, group=8, max_prompt=64, min_prompt=64, new_tokens=64, kl_coef=0.04)
    return args


def reward_text(text: str) -> float:
    """The reward of both sides: how often the digit 7 appears in the completion, / 10."""
    return text.count("7") / 10.0


def build_checkpoint(args, directory: str) -> PreTrainedTokenizerFast:
    """Saves a random Qwen2 model and a word-level tokenizer ("w0".."wN", pad, eos) to `directory`."""
    words = ["<pad>", "<eos>"] + [f"w{i}" for i in range(args.vocab - 2)]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", padding_side="left")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(args.seed)
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         max_position_embeddings=args.max_prompt + args.new_tokens + 16, rms_norm_eps=1e-6, rope_theta=10000.0,
                         tie_word_embeddings=args.tied, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return tokenizer


def make_prompts(args, count: int) -> list[str]:
    """`count` prompts of whole words ("w<i>"), each word one token, lengths in [min_prompt, max_prompt]."""
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(args.min_prompt, args.max_prompt + 1, size=count)
    return [" ".join(f"w{i}" for i in rng.integers(0, args.vocab - 2, size=n)) for n in lengths]


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (TRL generates and scores inside the step)."""

    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def time_trl(args, directory, tokenizer, prompts):
    steps = args.warmup + args.iters
    config = GRPOConfig(
        output_dir=os.path.join(directory, "trl"), use_cpu=True, bf16=False, seed=args.seed,
        per_device_train_batch_size=args.prompts * args.group, num_generations=args.group, gradient_accumulation_steps=1,
        max_completion_length=args.new_tokens, generation_kwargs={"min_new_tokens": args.new_tokens},
        temperature=1.0, top_k=0, top_p=1.0, beta=args.kl_coef, loss_type="grpo", scale_rewards="group", epsilon=0.2, num_iterations=1,
        learning_rate=args.learning_rate, lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
        max_steps=steps, logging_steps=1, report_to="none", save_strategy="no", shuffle_dataset=False, disable_dropout=True,
        disable_tqdm=True, gradient_checkpointing=False,  # TRL 1.x turns it on by default; jaxrl_self runs without remat
    )
    model = Qwen2ForCausalLM.from_pretrained(directory, dtype=torch.float32)
    timer = StepTimer()
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **_: [reward_text(c) for c in completions], args=config,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]), processing_class=tokenizer,
                          callbacks=[timer])
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout carries only the JSON
        trainer.train()
    return timer.times


class TextReward(RewardMethod):
    """`reward_text` of the decoded completion, through the host-callback verifier wrapper."""

    def __init__(self, tokenizer):
        self._fn = make_host_reward_fn(lambda text, reference: {"reward": reward_text(text)},
                                       lambda ids: tokenizer.decode(ids, skip_special_tokens=True), component_names=("reward",))

    def reward_fn(self, batch, reference_bytes):
        return self._fn(batch["completion_tokens"], batch["completion_mask"], reference_bytes)


def time_jaxrl_self(args, directory, tokenizer, prompts):
    rl = load_config_file(DEFAULT_CONFIG).rl
    rl.update({"algorithm": "grpo", "group_size": args.group, "prompts_per_step": args.prompts, "max_new_tokens": args.new_tokens,
               "kl_coef": args.kl_coef, "temperature": 1.0, "learning_rate": args.learning_rate})
    model_config, _, params = load_hf_checkpoint(directory)
    graphdef = model_graphdef(dataclasses.replace(model_config, logprob_chunk=args.logprob_chunk))
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(args.learning_rate, weight_decay=0.0))
    # commit every leaf to the device, as the update's outputs are: mixed committed/uncommitted
    # inputs would compile the update a second time on the second iteration
    state = jax.device_put(init_train_state(params, optimizer, args.seed, with_reference=args.kl_coef > 0), jax.devices()[0])
    method = TextReward(tokenizer)
    sampler = make_sampler(graphdef, SamplingConfig(max_new_tokens=args.new_tokens, eos_id=-1, pad_id=tokenizer.pad_token_id,
                                                    group_size=args.group, temperature=1.0))
    score_rewards, build_batch = make_reward_scorer(rl, method), make_batch_builder(graphdef, rl, method)
    update = make_rl_update(graphdef, optimizer, rl)
    group_valid = jnp.ones((args.prompts,), bool)
    references = np.zeros((args.prompts * args.group, 1), np.uint8)

    def iteration(state, index, phases):
        """One iteration; adds each phase's seconds to `phases` (each phase waits for its outputs)."""
        def timed(name, fn, *inputs):
            start = time.perf_counter()
            out = jax.block_until_ready(fn(*inputs))
            phases[name] += time.perf_counter() - start
            return out

        chunk = prompts[index * args.prompts:(index + 1) * args.prompts]
        tokens, mask = pad_batch([tokenizer.encode(p) for p in chunk], args.max_prompt, tokenizer.pad_token_id, side="left")
        key = jax.random.key(index)
        samples = timed("sample", sampler, state.params, jnp.asarray(tokens), jnp.asarray(mask), key)
        batch = {"prompt_tokens": np.repeat(tokens, args.group, 0), "prompt_mask": np.repeat(mask, args.group, 0),
                 "completion_tokens": samples.tokens, "completion_mask": samples.mask}
        rewards, _ = timed("reward", score_rewards, batch, references)
        train_batch, _ = timed("batch_and_reference", build_batch, state, batch, rewards, group_valid, key)
        state, _ = timed("update", update, state, train_batch, key)
        return state

    times, phases = [], collections.Counter()
    for index in range(args.warmup + args.iters):
        start = time.perf_counter()
        state = iteration(state, index, phases if index >= args.warmup else collections.Counter())
        times.append(time.perf_counter() - start)
    result = {"iter_s": times, "phase_s": {name: round(s / args.iters, 4) for name, s in phases.items()}}
    if args.profile:  # one more iteration (the first timed one's prompts) under the profiler
        with profile_summary.trace(args.profile):
            iteration(state, args.warmup, collections.Counter())
        result["profile"] = profile_summary.summarize(args.profile)
    return result


def iteration_roofline(args, prompts):
    """This machine's limits (measured now) and the mean lower bound of the timed iterations (module docstring)."""
    start = time.perf_counter()
    read = roofline.memory_read_bytes_per_s(args.read_mib * 2**20, repeats=args.rate_repeats)
    rates = roofline.Rates("float32", repeats=args.rate_repeats)
    shape = roofline.ModelShape(hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                                head_dim=args.hidden // args.heads, intermediate=args.intermediate, vocab=args.vocab,
                                tied=args.tied)
    bounds = []
    for index in range(args.warmup, args.warmup + args.iters):
        lengths = [len(p.split()) for p in prompts[index * args.prompts:(index + 1) * args.prompts]]
        bounds.append(roofline.grpo_iteration_bound(shape, rates, read["best"], lengths, args.group, args.new_tokens, 4,
                                                    with_reference=args.kl_coef > 0))
    mean = {key: float(np.mean([b[key] for b in bounds])) for key in ("seconds", "sampling_s", "forward_s", "train_flops")}
    mean["forwards"] = bounds[0]["forwards"]
    mean["memory_bound_steps"] = bounds[0]["sampling"]["memory_bound_steps"]
    limits = {"read_gbytes_per_s": {k: (v if k in ("nbytes", "threads") else round(v / 1e9, 2)) for k, v in read.items()},
              "matmul_gflops_per_s_by_shape_mkn": rates.table(), "measure_s": round(time.perf_counter() - start, 1),
              "params_millions": round(shape.params / 1e6, 2), "layer_matmul_params": shape.layer_matmul_params,
              "head_params": shape.head_params, "dtype_bytes": 4}
    return limits, mean


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    prompts = make_prompts(args, args.prompts * (args.warmup + args.iters))
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = build_checkpoint(args, directory)
        trl_times = None if args.skip_trl else time_trl(args, directory, tokenizer, prompts)
        jax_run = time_jaxrl_self(args, directory, tokenizer, prompts)
    jax_times = jax_run["iter_s"]
    trl_s = float(np.mean(trl_times[args.warmup:])) if trl_times else None
    jax_s = float(np.mean(jax_times[args.warmup:]))
    limits, bound = iteration_roofline(args, prompts)
    result = {
        "benchmark": "one GRPO iteration (sample + reward + update)",
        "device": str(jax.devices()[0]), "torch_threads": args.threads,
        "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "kv_heads": args.kv_heads,
                  "intermediate": args.intermediate, "vocab": args.vocab, "tied": args.tied},
        "work": {"prompts": args.prompts, "group": args.group, "min_prompt": args.min_prompt, "max_prompt": args.max_prompt,
                 "new_tokens": args.new_tokens, "kl_coef": args.kl_coef, "jaxrl_self_logprob_chunk": args.logprob_chunk,
                 "completion_tokens": args.prompts * args.group * args.new_tokens, "warmup_iters": args.warmup,
                 "timed_iters": args.iters},
        "trl_s_per_iter": round(trl_s, 4) if trl_times else None,
        "jaxrl_self_s_per_iter": round(jax_s, 4),
        "speedup_trl_over_jaxrl_self": round(trl_s / jax_s, 2) if trl_times else None,
        "jaxrl_self_compile_s": round(jax_times[0] - float(np.median(jax_times[args.warmup:])), 2),
        "trl_first_iter_s": round(trl_times[0], 3) if trl_times else None,
        "trl_iter_s": [round(t, 3) for t in trl_times[args.warmup:]] if trl_times else None,
        "jaxrl_self_iter_s": [round(t, 4) for t in jax_times[args.warmup:]],
        "jaxrl_self_phase_s": jax_run["phase_s"],
        "jaxrl_self_profile": jax_run.get("profile"),
        "roofline": {"seconds_per_iter": round(bound["seconds"], 4), "sampling_s": round(bound["sampling_s"], 4),
                     "forward_s": round(bound["forward_s"], 4), "forwards": bound["forwards"],
                     "train_gflops": round(bound["train_flops"] / 1e9, 2),
                     "sampling_memory_bound_steps": bound["memory_bound_steps"],
                     "trl_fraction": round(bound["seconds"] / trl_s, 3) if trl_times else None,
                     "jaxrl_self_fraction": round(bound["seconds"] / jax_s, 3)},
        "limits": limits,
        "roofline_formulas": roofline.FORMULAS,
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "trl": __import__("trl").__version__},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
