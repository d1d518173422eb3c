"""Mixed 1- to 5-digit addition with uniform sampling: the baseline of the SEC curriculum
(docs/curricula.md; configs/arithmetic_sec.py is the same run with SEC).

    jaxrl-self train --config configs/arithmetic_mixed_uniform.py --workdir runs/arithmetic_mixed_uniform

Loads configs/default.py and changes the task to `arithmetic_mixed`: operands of 1 to 5 digits, one
problem category per operand size (K = 5), an equal share of each split. Half of the SFT
demonstrations drop the final carry digit, as in the default job, so the warm-started model solves
the small categories and fails the large ones; each step draws 16 prompts uniformly from the split.
Metrics per category: `curriculum/<k>-digit/share`, `/accuracy`, `/zero_variance` and the held-out
`eval/<k>-digit/accuracy`.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    config.task.name = "arithmetic_mixed"
    config.task.digits = 5  # categories: 1-digit .. 5-digit operands
    config.rl.max_new_tokens = 64  # a 5-digit worked solution is about 50 tokens
    config.rl.steps = 60
    config.curriculum.name = "uniform"
    return config
