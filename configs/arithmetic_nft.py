"""NFT, negative-aware fine-tuning (docs/algorithms.md#nft-and-negative-sample-reinforcement), on the arithmetic task.

    jaxrl-self train --config configs/arithmetic_nft.py --workdir runs/arithmetic_nft

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters: positives are fitted by likelihood, negatives through an implicit negative
policy, each prompt weighted by 1 - r_q (its Dr. GRPO weighting). No KL; aggregation
seq_mean_token_sum_norm with T_const = rl.max_new_tokens.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "nft"
    rl.kl_coef = 0.0
    rl.nft.weighting = "dr_grpo"
    rl.nft.neg_weight = 1.0
    rl.nft.neg_floor = 1.0
    return config
