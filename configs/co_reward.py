"""The default job (SFT warm start, then GRPO on 3-digit addition) with a label-free reward:
Co-Reward (docs/algorithms.md#co-reward-cross-view-agreement): each question and its rephrasing (operands swapped) are sampled;
a completion is rewarded for agreeing with the majority answer of the other view.
The references are used only to log gold accuracy ("accuracy/train") and for held-out evaluation.

  jaxrl-self train --config configs/co_reward.py --workdir runs/co_reward
Test-time training on the unlabeled held-out prompts: add --config.method.test_time=True.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.rl.reward = "co_reward"
    config.rl.learning_rate = 1e-4  # label-free signals are noisy: a smaller step than the verifier's default
    config.rl.prompts_per_step = 8  # 8 questions x 2 views: the same 16 groups per step as the default
    return config
