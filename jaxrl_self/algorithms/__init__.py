"""Math of policy-gradient RL on masked arrays: aggregation, advantages, KL, losses, filtering."""

from jaxrl_self.algorithms.advantages import (
    binary_rewards,
    gae_advantages,
    group_advantages,
    outcome_token_rewards,
    reinforce_pp_advantages,
    rloo_advantages,
    signed_advantages,
    task_relative_advantages,
    whiten,
)
from jaxrl_self.algorithms.aggregation import AGGREGATION_MODES, aggregate, masked_mean, masked_sum, masked_var
from jaxrl_self.algorithms.filtering import group_has_signal, overlong_penalty, select_groups_with_signal
from jaxrl_self.algorithms.kl import KL_KINDS, kl_penalty
from jaxrl_self.algorithms.losses import (
    clipped_surrogate,
    dpo_loss,
    gspo_loss,
    nft_loss,
    nft_prompt_weight,
    sequence_logprob,
    token_entropy,
    token_logprobs,
    truncated_importance_weight,
    value_loss,
)

__all__ = [
    "AGGREGATION_MODES",
    "KL_KINDS",
    "aggregate",
    "binary_rewards",
    "clipped_surrogate",
    "dpo_loss",
    "gae_advantages",
    "group_advantages",
    "group_has_signal",
    "gspo_loss",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "nft_loss",
    "nft_prompt_weight",
    "outcome_token_rewards",
    "overlong_penalty",
    "reinforce_pp_advantages",
    "rloo_advantages",
    "select_groups_with_signal",
    "sequence_logprob",
    "signed_advantages",
    "task_relative_advantages",
    "token_entropy",
    "token_logprobs",
    "truncated_importance_weight",
    "value_loss",
    "whiten",
]
