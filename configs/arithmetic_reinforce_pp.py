"""REINFORCE++ (docs/algorithms.md#reinforce-and-reinforce-baseline) on the arithmetic task: token k1 KL in the reward, returns whitened over the batch.

    jaxrl-self train --config configs/arithmetic_reinforce_pp.py --workdir runs/arithmetic_reinforce_pp

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters. REINFORCE++-baseline (group mean subtracted first), token_mean aggregation, two minibatch steps.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "reinforce_pp"
    rl.kl_coef = 0.04  # k1 penalty in the token reward
    rl.reinforce_pp.group_baseline = True
    rl.eps_low = rl.eps_high = 0.2
    rl.minibatches = 2
    return config
