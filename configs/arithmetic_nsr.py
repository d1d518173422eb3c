"""Negative-sample reinforcement / weighted REINFORCE (docs/algorithms.md#nft-and-negative-sample-reinforcement)
on the arithmetic task.

    jaxrl-self train --config configs/arithmetic_nsr.py --workdir runs/arithmetic_nsr

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters: advantage -1 for every wrong completion and 0.1 for every correct one
(W-REINFORCE). `--config.rl.nsr.pos_weight=0` trains on negatives only;
`--config.rl.nsr.pos_weight=1 --config.rl.nsr.neg_weight=0` is rejection-sampling fine-tuning.
No KL; aggregation seq_mean_token_sum_norm with T_const = rl.max_new_tokens.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "nsr"
    rl.kl_coef = 0.0
    rl.nsr.pos_weight = 0.1
    rl.nsr.neg_weight = 1.0
    return config
