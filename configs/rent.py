"""The default job (SFT warm start, then GRPO on 3-digit addition) with a label-free reward:
RENT (docs/algorithms.md#rent-entropy-minimisation): reward = minus the mean token entropy of the completion.
The references are used only to log gold accuracy ("accuracy/train") and for held-out evaluation.

  jaxrl-self train --config configs/rent.py --workdir runs/rent
Test-time training on the unlabeled held-out prompts: add --config.method.test_time=True.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.rl.reward = "rent"
    config.rl.learning_rate = 1e-4  # label-free signals are noisy: a smaller step than the verifier's default
    return config
