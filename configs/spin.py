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
    config.method.loop = "spin"  # the recipe (jaxrl_self/recipes/__init__.py); its options and their
    # defaults, set here with config.method.<option> = value to change one: jaxrl_self/recipes/spin.py (SPIN.config_defaults)
    return config
