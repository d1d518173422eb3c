"""SPIN (docs/algorithms.md#dpo-and-spin-losses) on 2-digit addition with correct worked solutions (a short CPU run).

A briefly SFT-trained model (fewer warm-start steps than the default job, so it lags behind its
data) plays against itself: each iteration its own generations on the SFT prompts are the rejected
side of DPO pairs whose chosen side is the worked solution, with the previous iterate as the
frozen reference (lam = 0.1). The held-out log-prob margin of the worked solutions over the
warm-started model's generations (`spin/heldout_margin`) is the metric it moves.

    jaxrl-self train --config configs/spin.py
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def _default_config():
    return load_config_file(Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.task.demo_error_rate = 0.0  # SPIN's target distribution is the SFT data itself
    config.task.digits = 2
    config.rl.max_new_tokens = 32  # the longest 2-digit worked solution is 23 tokens + EOS
    config.sft.steps = 100  # brief: the model lags behind its data
    config.method.update(dict(
        loop="spin",  # jaxrl_self/recipes/__init__.py
        iterations=2,
        num_problems=512,  # SFT prompts (with their worked solutions) used every iteration
        samples_per_prompt=1,  # self-generated (rejected) completions per prompt
        temperature=1.0,
        beta=0.1,  # lam
        train_steps=60,  # DPO steps per iteration (from the previous iterate)
        train_batch_size=32,
        learning_rate=1e-4,
        batch_size=256,  # prompts per sampler call
    ))
    return config
