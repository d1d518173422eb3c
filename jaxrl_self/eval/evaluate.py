"""Evaluation on a task's held-out split: greedy accuracy, and pass@k / maj@k / mean@k from n samples.

With several processes the evaluation is replicated, not sharded: every process passes the same
prompts to the sampler (which runs on the global mesh), gets all completions gathered to its host
and scores all of them, so every process returns the same results. Held-out sets are small; the
RL loop is where each process scores only its own rows.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.multihost_utils import process_allgather

from jaxrl_self.eval.passk import summarize
from jaxrl_self.rewards.answers import extract_answer
from jaxrl_self.tasks.encoding import encode_prompts


def generate(sampler, params, tokenizer, prompts: Sequence[str], prompt_len: int, key, batch_size: int, **knobs) -> list[list[str]]:
    """Completions (text) for each prompt: `[len(prompts)][group_size]`, in batches of `batch_size`.

    The last batch is padded with repeats of the first prompt so that every call has one shape.
    Every process gets all completions (the sampler's outputs, gathered from all hosts).
    """
    results = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        padded = chunk + [chunk[0]] * (batch_size - len(chunk))
        tokens, mask = encode_prompts(tokenizer, padded, prompt_len)
        ids = jnp.arange(start, start + batch_size, dtype=jnp.int32)
        out = sampler(params, jnp.asarray(tokens), jnp.asarray(mask), key, ids, **knobs)
        out_tokens, out_mask = process_allgather((out.tokens, out.mask), tiled=True)
        group = out_tokens.shape[0] // batch_size
        texts = [tokenizer.decode(t[m].tolist()) for t, m in zip(out_tokens, out_mask)]
        results += [texts[i * group:(i + 1) * group] for i in range(len(chunk))]
    return results


def evaluate(sampler, params, task, examples, prompt_len: int, batch_size: int, key=None, ks: Sequence[int] = (1,), score=None,
             **knobs) -> dict:
    """Scores completions of `examples` with the task's verifier, or with `score(completion,
    reference, prompt=...) -> {"correct", "format_ok", "reward"}` (a run's own reward function).

    `examples`' prompts are used as they are: a task renders them (template, chat template) when
    it is built (`tasks.chat`). Every k in `ks` must be <= the sampler's samples per prompt.

    Returns {"accuracy": mean correctness over all samples, "format_ok": ..., "summary": pass@k /
    maj@k / mean@k from `summarize`, "samples": a few (prompt, completion, reward) dicts}, and
    when the examples are of several problem categories (`Example.category`), "category_accuracy":
    {category index: mean correctness of its examples' samples}.
    """
    key = jax.random.key(0) if key is None else key
    prompts = [e.prompt for e in examples]
    score = score or (lambda completion, reference, prompt="": task.score(completion, reference))
    completions = generate(sampler, params, task.tokenizer, prompts, prompt_len, key, batch_size, **knobs)
    records, correct, format_ok, samples = [], [], [], []
    for example, outs in zip(examples, completions):
        scores = [score(text, example.reference, prompt=example.prompt) for text in outs]
        correct += [s["correct"] for s in scores]
        format_ok += [s["format_ok"] for s in scores]
        records.append({"correct": [bool(s["correct"]) for s in scores], "reference": example.reference,
                        "answers": [extract_answer(text) for text in outs], "task": task.name})
        if len(samples) < 8:
            samples.append({"prompt": example.prompt, "completion": outs[0], "reward": scores[0]["reward"]})
    samples_per_prompt = len(completions[0])
    too_large = [k for k in ks if k > samples_per_prompt]
    if too_large:  # pass@k of more samples than drawn is undefined; say so rather than drop k
        raise ValueError(f"k values {too_large} exceed the {samples_per_prompt} samples per prompt")
    results = {"accuracy": float(np.mean(correct)), "format_ok": float(np.mean(format_ok)),
               "summary": summarize(records, ks=ks), "samples": samples}
    categories = np.array([example.category for example in examples])
    if len(np.unique(categories)) > 1:
        per_example = np.mean([record["correct"] for record in records], axis=1)
        results["category_accuracy"] = {int(c): float(np.mean(per_example[categories == c])) for c in np.unique(categories)}
    return results
