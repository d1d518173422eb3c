"""GRPO (docs/algorithms.md#grpo) on the arithmetic task: group-normalised advantages, clipped surrogate, k3 KL loss term.

    jaxrl-self train --config configs/arithmetic_grpo.py --workdir runs/arithmetic_grpo

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters. Aggregation: seq_mean_token_mean.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "grpo"
    rl.std_ddof = 1  # unbiased group std (TRL/verl)
    rl.advantage_eps = 1e-6
    rl.eps_low = rl.eps_high = 0.2
    rl.kl_coef = 0.04  # k3 KL to the frozen SFT model, a loss term
    return config
