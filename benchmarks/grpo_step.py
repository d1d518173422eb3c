"""One full GRPO iteration (sample + reward + update): jaxrl_self vs TRL's GRPOTrainer, same work.

A tiny random Qwen2 model and a word-level tokenizer are built in code and saved with
`save_pretrained` to a temporary directory (nothing is downloaded); TRL loads it with
transformers, jaxrl_self with `jaxrl_self.models.checkpoint_io.load_hf_checkpoint`. Both sides
run the same prompts, group size, generation length (EOS suppressed, so every completion has
exactly `--new-tokens` tokens), the same Python reward function (occurrences of "7" in the decoded
completion), GRPO with group-normalised advantages, the `seq_mean_token_mean` loss, no KL, one
optimizer step per rollout, AdamW (constant lr, no weight decay) with global-norm clipping 1.0,
on CPU. TRL runs first (XLA's CPU threads slow torch down when interleaved).

Prints ONE JSON object: seconds per iteration for each side (mean over `--iters` timed iterations
after `--warmup` warm-up iterations), their ratio (TRL / jaxrl_self), and jaxrl_self's compile
time (first iteration minus a warm one), reported separately.

    pip install -e '.[bench]'
    python3 benchmarks/grpo_step.py                     # ~4 min on 2 cores (mostly TRL and XLA compile)
    python3 benchmarks/grpo_step.py --layers 2 --iters 3   # quicker
"""
from __future__ import annotations

import argparse
import contextlib
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
from jaxrl_self.models.tokenizer import pad_batch
from jaxrl_self.rewards.host import make_host_reward_fn
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.train.rl_step import make_batch_builder, make_reward_scorer, make_rl_update
from jaxrl_self.train.state import init_train_state

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
    return parser.parse_args()


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
                         tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    return tokenizer


def make_prompts(args, count: int) -> list[str]:
    rng = np.random.default_rng(args.seed)
    lengths = rng.integers(4, args.max_prompt + 1, size=count)
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
        temperature=1.0, top_k=0, top_p=1.0, beta=0.0, loss_type="grpo", scale_rewards="group", epsilon=0.2, num_iterations=1,
        learning_rate=args.learning_rate, lr_scheduler_type="constant", optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
        max_steps=steps, logging_steps=1, report_to="none", save_strategy="no", shuffle_dataset=False, disable_dropout=True,
        disable_tqdm=True,
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
               "kl_coef": 0.0, "temperature": 1.0, "learning_rate": args.learning_rate})
    _, graphdef, params = load_hf_checkpoint(directory)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(args.learning_rate, weight_decay=0.0))
    # commit every leaf to the device, as the update's outputs are: mixed committed/uncommitted
    # inputs would compile the update a second time on the second iteration
    state = jax.device_put(init_train_state(params, optimizer, args.seed, with_reference=False), jax.devices()[0])
    method = TextReward(tokenizer)
    sampler = make_sampler(graphdef, SamplingConfig(max_new_tokens=args.new_tokens, eos_id=-1, pad_id=tokenizer.pad_token_id,
                                                    group_size=args.group, temperature=1.0))
    score_rewards, build_batch = make_reward_scorer(rl, method), make_batch_builder(graphdef, rl, method)
    update = make_rl_update(graphdef, optimizer, rl)
    group_valid = jnp.ones((args.prompts,), bool)
    references = np.zeros((args.prompts * args.group, 1), np.uint8)

    def iteration(state, index):
        chunk = prompts[index * args.prompts:(index + 1) * args.prompts]
        tokens, mask = pad_batch([tokenizer.encode(p) for p in chunk], args.max_prompt, tokenizer.pad_token_id, side="left")
        key = jax.random.key(index)
        samples = sampler(state.params, jnp.asarray(tokens), jnp.asarray(mask), key)
        batch = {"prompt_tokens": np.repeat(tokens, args.group, 0), "prompt_mask": np.repeat(mask, args.group, 0),
                 "completion_tokens": samples.tokens, "completion_mask": samples.mask}
        rewards, _ = score_rewards(batch, references)
        train_batch, _ = build_batch(state, batch, rewards, group_valid, key)
        state, metrics = update(state, train_batch, key)
        jax.block_until_ready((state, metrics))
        return state

    times = []
    for index in range(args.warmup + args.iters):
        start = time.perf_counter()
        state = iteration(state, index)
        times.append(time.perf_counter() - start)
    return times


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    prompts = make_prompts(args, args.prompts * (args.warmup + args.iters))
    with tempfile.TemporaryDirectory() as directory:
        tokenizer = build_checkpoint(args, directory)
        trl_times = time_trl(args, directory, tokenizer, prompts)
        jax_times = time_jaxrl_self(args, directory, tokenizer, prompts)
    trl_s = float(np.mean(trl_times[args.warmup:]))
    jax_s = float(np.mean(jax_times[args.warmup:]))
    result = {
        "benchmark": "one GRPO iteration (sample + reward + update)",
        "device": str(jax.devices()[0]), "torch_threads": args.threads,
        "model": {"hidden": args.hidden, "layers": args.layers, "heads": args.heads, "kv_heads": args.kv_heads,
                  "intermediate": args.intermediate, "vocab": args.vocab},
        "work": {"prompts": args.prompts, "group": args.group, "max_prompt": args.max_prompt, "new_tokens": args.new_tokens,
                 "completion_tokens": args.prompts * args.group * args.new_tokens, "warmup_iters": args.warmup,
                 "timed_iters": args.iters},
        "trl_s_per_iter": round(trl_s, 4),
        "jaxrl_self_s_per_iter": round(jax_s, 4),
        "speedup_trl_over_jaxrl_self": round(trl_s / jax_s, 2),
        "jaxrl_self_compile_s": round(jax_times[0] - float(np.median(jax_times[args.warmup:])), 2),
        "trl_first_iter_s": round(trl_times[0], 3),
        "trl_iter_s": [round(t, 3) for t in trl_times[args.warmup:]],
        "jaxrl_self_iter_s": [round(t, 4) for t in jax_times[args.warmup:]],
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "trl": __import__("trl").__version__},
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
