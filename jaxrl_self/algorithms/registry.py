"""The RL algorithms (`config.rl.algorithm`) as data: what each one computes and needs.

Config validation, the RL step (`train.rl_step`) and the RL recipe read this table instead of
comparing algorithm names. `algorithms/advantages.py` and `algorithms/losses.py` give the equations.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """How one algorithm trains.

    advantages: the estimator, "group" (GRPO's (r - mean) / std over the G completions of a
      prompt), "group_no_std" (Dr. GRPO), "binary_group_no_std" (Dr. GRPO's on the 0/1 labels
      of positive completions, NFT), "signed" (one weight per label, weighted REINFORCE), "rloo"
      (leave-one-out), "reinforce_pp" (token returns whitened over the batch) or "gae" (PPO);
      token_advantages: it gives `[N, T]` (else `[N]`).
    loss: "clipped" (token-level clipped surrogate), "gspo" (sequence-level ratio) or "nft"
      (negative-aware fine-tuning's implicit negative policy).
    kl: where the KL to the reference goes, "loss" (k3 term), "reward" (k1 penalty) or "none".
    aggregation: the default `rl.loss_aggregation`.
    value_head: a critic on the policy's hidden states (PPO). dynamic_sampling: resample until
    every group has reward signal (DAPO). min_group_size: completions per prompt it needs.
    """

    advantages: str
    loss: str
    kl: str
    aggregation: str
    token_advantages: bool = False
    value_head: bool = False
    dynamic_sampling: bool = False
    min_group_size: int = 1


ALGORITHMS = {
    "grpo": Algorithm("group", "clipped", "loss", "seq_mean_token_mean", min_group_size=2),
    "dr_grpo": Algorithm("group_no_std", "clipped", "loss", "seq_mean_token_sum_norm", min_group_size=2),
    "dapo": Algorithm("group", "clipped", "none", "token_mean", dynamic_sampling=True, min_group_size=2),
    "gspo": Algorithm("group", "gspo", "loss", "seq_mean_token_mean", min_group_size=2),
    "rloo": Algorithm("rloo", "clipped", "reward", "seq_mean_token_sum", min_group_size=2),
    "reinforce_pp": Algorithm("reinforce_pp", "clipped", "reward", "token_mean", token_advantages=True),
    "ppo": Algorithm("gae", "clipped", "reward", "token_mean", token_advantages=True, value_head=True),
    "nft": Algorithm("binary_group_no_std", "nft", "none", "seq_mean_token_sum_norm", min_group_size=2),
    "nsr": Algorithm("signed", "clipped", "none", "seq_mean_token_sum_norm"),
}


def algorithm_of(rl) -> Algorithm:
    """The `Algorithm` of `config.rl` (`rl.algorithm` is validated first)."""
    return ALGORITHMS[rl.algorithm]
