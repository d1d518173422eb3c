"""DAPO (docs/algorithms.md#dapo) on the arithmetic task: clip-higher, token-mean loss, dynamic sampling, overlong shaping.

    jaxrl-self train --config configs/arithmetic_dapo.py --workdir runs/arithmetic_dapo

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters. No KL term. Dynamic sampling resamples prompts (up to rl.dapo.max_resample_rounds extra rounds)
until every group has reward signal; several minibatch steps per rollout.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "dapo"
    rl.eps_low = 0.2
    rl.eps_high = 0.28  # clip-higher
    rl.kl_coef = 0.0
    rl.dapo.max_resample_rounds = 3
    rl.overlong_max_len = rl.max_new_tokens  # worked 3-digit sums take ~31 tokens
    rl.overlong_cache_len = 6
    rl.minibatches = 4  # 4 optimizer steps per rollout, on old log-probs
    return config
