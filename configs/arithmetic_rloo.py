"""RLOO (docs/algorithms.md#rloo) on the arithmetic task: leave-one-out baseline, sequence-level REINFORCE.

    jaxrl-self train --config configs/arithmetic_rloo.py --workdir runs/arithmetic_rloo

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters. The KL to the frozen SFT model is a sequence k1 penalty in the reward; aggregation seq_mean_token_sum.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "rloo"
    rl.kl_coef = 0.04  # R - kl_coef * sum_t (old_logp - ref_logp)
    rl.eps_low = rl.eps_high = 0.2
    return config
