"""Self-rewarding (docs/algorithms.md#self-rewarding) on 2-digit addition (a short CPU run) whose SFT
demonstrations drop the final carry digit half of the time.

The warm start mixes the worked solutions with judged seed examples ("<judge>" + prompt + response
-> "Score: 5" if the verifier accepts the response, "Score: 0" otherwise); afterwards the model
scores its own samples (4 per prompt), and DPO trains on its (highest, lowest) pairs with the
previous iterate as reference. See jaxrl_self/recipes/self_rewarding.py.

    jaxrl-self train --config configs/self_rewarding.py
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
    config.method.loop = "self_rewarding"  # the recipe (jaxrl_self/recipes/__init__.py); its options and their
    # defaults, set here with config.method.<option> = value to change one: jaxrl_self/recipes/self_rewarding.py (SelfRewarding.config_defaults)
    return config
