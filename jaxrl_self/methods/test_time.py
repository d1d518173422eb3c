"""Test-time training (TTRL's setting, docs/algorithms.md#ttrl-majority-vote): label-free RL on the unlabeled evaluation
prompts themselves (`config.method.test_time`), judged by pass@1 and maj@G on those prompts
before and after (docs/algorithms.md#passk-majk-and-meank). The gold labels enter only this report, never training.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax

from jaxrl_self.eval.evaluate import evaluate
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.tasks.base import Example


def make_vote_evaluator(graphdef, task, examples: Sequence[Example], *, prompt_len: int, max_new_tokens: int,
                        group_size: int, temperature: float, batch_size: int, seed: int) -> Callable[..., dict]:
    """`evaluate_votes(params) -> {"pass@1", "maj@G"}` on `examples`, from G samples per prompt at
    `temperature` (the RL sampling settings), with a fixed key so that before/after are comparable.

    The sampler is built (and compiled) once; `batch_size` prompts are sampled per call.
    """
    tokenizer = task.tokenizer
    sampler = make_sampler(graphdef, SamplingConfig(max_new_tokens=max_new_tokens, eos_id=tokenizer.eos_id,
                                                    pad_id=tokenizer.pad_id, vocab_size=tokenizer.vocab_size,
                                                    group_size=group_size, temperature=temperature))

    def evaluate_votes(params) -> dict:
        results = evaluate(sampler, params, task, examples, prompt_len, batch_size, key=jax.random.key(seed),
                           ks=(1, group_size))
        summary = results["summary"]
        return {"pass@1": summary["pass@1"], f"maj@{group_size}": summary[f"maj@{group_size}"]}

    return evaluate_votes
