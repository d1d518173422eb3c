"""STaR (docs/algorithms.md#star-and-rest-em) on 2-digit addition (a short CPU run) whose SFT demonstrations
drop the final carry digit half of the time.

After the SFT warm start, each outer loop samples one rationale per training problem, keeps the
verified-correct ones, rationalizes the failures (samples again with the gold answer as a hint in
the prompt; a rationale that reaches it is kept, stored without the hint), and fine-tunes the
warm-started model on the kept set for a number of steps that grows 20% per loop.

    jaxrl-self train --config configs/star.py
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def _default_config():
    return load_config_file(Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.task.digits = 2
    config.rl.max_new_tokens = 32  # the longest 2-digit worked solution is 23 tokens + EOS
    config.sft.steps = 200
    config.method.loop = "star"  # the recipe (jaxrl_self/recipes/__init__.py); its options and their
    # defaults, set here with config.method.<option> = value to change one: jaxrl_self/recipes/self_training.py (SelfTraining.config_defaults)
    return config
