"""GSPO (docs/algorithms.md#gspo) on the arithmetic task: sequence-level length-normalised ratio, clipped per sequence.

    jaxrl-self train --config configs/arithmetic_gspo.py --workdir runs/arithmetic_gspo

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters. Tight clip range as in the paper; two minibatch steps per rollout, where GSPO differs from GRPO.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "gspo"
    rl.eps_low = 3e-4
    rl.eps_high = 4e-4
    rl.kl_coef = 0.0
    rl.minibatches = 2
    return config
