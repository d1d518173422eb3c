"""Absolute Zero (docs/algorithms.md#absolute-zero-rewards-and-trr): a tiny char-level model proposes and solves one-line Python
programs (`lambda x:x*3+1`) for deduction, abduction and induction, paid by the sandboxed executor.

A short SFT on synthetic valid programs and solved tasks warm-starts the policy; self-play RL then
uses learnability rewards for the proposer, correctness for the solver (format aware) and TRR++
advantages per (role, task kind). Reported before/after RL: the proposer's valid-task rate on fixed
reference prompts and the solver's greedy and sampled accuracy on a fixed held-out set of synthetic
tasks. The task fields of the default config are not used except `task.max_prompt_len`.

    jaxrl-self train --config configs/absolute_zero.py
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def _default_config():
    return load_config_file(Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.task.max_prompt_len = 40  # fits every prompt made from a proposal of <= rl.max_new_tokens tokens
    config.model.max_position_embeddings = 64
    config.sft.update(dict(steps=150, batch_size=64, learning_rate=3e-3, warmup_steps=10))
    config.rl.update(dict(
        algorithm="reinforce_pp",  # TRR++ advantages are computed by the method; this sets token_mean aggregation
        kl_coef=0.0,
        steps=60,
        group_size=8,  # solver answers per task: n of the learnability estimate
        max_new_tokens=24,
        temperature=1.0,
        learning_rate=5e-4,
    ))
    config.eval.every = 20
    config.method.loop = "absolute_zero"  # the recipe (jaxrl_self/recipes/__init__.py); its options and their
    # defaults, set here with config.method.<option> = value to change one: jaxrl_self/recipes/absolute_zero.py (AbsoluteZero.config_defaults)
    return config
