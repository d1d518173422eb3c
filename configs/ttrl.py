"""The default job (SFT warm start, then GRPO on 3-digit addition) with a label-free reward:
TTRL (docs/algorithms.md#ttrl-majority-vote): reward = agreement with the majority answer of the prompt's G samples;
the update uses a random half of them (method.ttrl_train_samples).
The references are used only to log gold accuracy ("accuracy/train") and for held-out evaluation.

  jaxrl-self train --config configs/ttrl.py --workdir runs/ttrl
Test-time training on the unlabeled held-out prompts: add --config.method.test_time=True.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.rl.reward = "ttrl"
    config.rl.learning_rate = 1e-4  # label-free signals are noisy: a smaller step than the verifier's default
    config.method.ttrl_train_samples = 4
    return config
