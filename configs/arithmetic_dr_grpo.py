"""Dr. GRPO (docs/algorithms.md#dr-grpo) on the arithmetic task: no std division, no per-sequence length normalisation.

    jaxrl-self train --config configs/arithmetic_dr_grpo.py --workdir runs/arithmetic_dr_grpo

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters. Aggregation: seq_mean_token_sum_norm with T_const = rl.max_new_tokens; no KL.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "dr_grpo"
    rl.eps_low = rl.eps_high = 0.2
    rl.kl_coef = 0.0
    return config
