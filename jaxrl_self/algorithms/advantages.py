"""Advantage estimators (equations and worked examples: docs/algorithms.md). All outputs are constants (stop-gradient)."""

import jax
import jax.numpy as jnp

from jaxrl_self.algorithms.aggregation import masked_mean, masked_var

WHITEN_EPS = 1e-8


def group_advantages(rewards, *, normalize_std=True, std_ddof=1, eps=1e-6):
    """GRPO group-normalised advantages (docs/algorithms.md#grpo); Dr. GRPO with `normalize_std=False`.

    `A = (r - mean_G r) / (std_G r + eps)`, or `A = r - mean_G r` without std normalisation.

    Args:
      rewards: `[B, G]` float rewards of the G completions of each of B prompts.
      normalize_std: divide by the group std (GRPO) or not (Dr. GRPO, docs/algorithms.md#dr-grpo).
      std_ddof: 1 for the unbiased std (TRL/verl), 0 for the population std.
      eps: added to the std outside the sqrt.
    Returns:
      `[B, G]` float32 advantages.
    """
    rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
    centered = rewards - jnp.mean(rewards, axis=-1, keepdims=True)
    if not normalize_std:
        return centered
    ones = jnp.ones_like(rewards)
    std = jnp.sqrt(masked_var(rewards, ones, axis=-1, ddof=std_ddof, keepdims=True))
    return centered / (std + eps)


POSITIVE_REWARD = 0.5  # a completion with a higher reward is a positive (correct) sample


def binary_rewards(rewards):
    """Positive/negative labels of completions: `c = [r > 0.5]` (a verifier's reward is 0 or 1;
    countdown's format-only reward 0.1 is a negative) (docs/algorithms.md#nft-and-negative-sample-reinforcement).

    Args:
      rewards: `[...]` float rewards.
    Returns:
      `[...]` float32, 1 for positive and 0 for negative completions (constants).
    """
    return (jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32)) > POSITIVE_REWARD).astype(jnp.float32)


def signed_advantages(rewards, *, pos_weight, neg_weight):
    """Weighted REINFORCE's advantages (docs/algorithms.md#nft-and-negative-sample-reinforcement):
    `A = pos_weight` for a positive completion (`binary_rewards`), `A = -neg_weight` for a negative one.

    Args:
      rewards: `[N]` float rewards.
      pos_weight, neg_weight: non-negative floats; `pos_weight = 0` trains on negatives only,
        `neg_weight = 0` is rejection-sampling fine-tuning.
    Returns:
      `[N]` float32 advantages.
    """
    positive = binary_rewards(rewards)
    return pos_weight * positive - neg_weight * (1.0 - positive)


def rloo_advantages(rewards):
    """RLOO leave-one-out advantages `A_i = r_i - mean_{j != i} r_j` (docs/algorithms.md#rloo).

    Args:
      rewards: `[B, G]` float rewards, G >= 2.
    Returns:
      `[B, G]` float32 advantages `G/(G-1) * (r - mean_G r)`.
    """
    rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
    group_size = rewards.shape[-1]
    if group_size < 2:
        raise ValueError(f"RLOO needs a group size of at least 2, got {group_size}")
    centered = rewards - jnp.mean(rewards, axis=-1, keepdims=True)
    return centered * (group_size / (group_size - 1))


def _last_valid_token(mask):
    """`[N, T]` float32 one-hot of the last position with mask 1 (all zero for empty rows)."""
    mask = jnp.asarray(mask, jnp.float32)
    valid_after = jnp.flip(jnp.cumsum(jnp.flip(mask, -1), axis=-1), -1) - mask
    return mask * (valid_after == 0)


def outcome_token_rewards(rewards, mask, old_logp, ref_logp, kl_coef):
    """Token rewards with a k1 KL penalty each token and the outcome at the last valid token.

    `r_t = -kl_coef * (old_logp_t - ref_logp_t) + [t == last valid] * R`
    (docs/algorithms.md#reinforce-and-reinforce-baseline, docs/algorithms.md#ppo-value-head-and-gae).

    Args:
      rewards: `[N]` float outcome reward per sequence.
      mask: `[N, T]` completion mask.
      old_logp, ref_logp: `[N, T]` float log-probs under pi_old and pi_ref (constants).
      kl_coef: float KL coefficient beta.
    Returns:
      `[N, T]` float32 token rewards, 0 at padding.
    """
    rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
    mask = jnp.asarray(mask, jnp.float32)
    log_ratio = jax.lax.stop_gradient(jnp.asarray(old_logp, jnp.float32) - jnp.asarray(ref_logp, jnp.float32))
    kl_reward = jnp.where(mask != 0, -kl_coef * log_ratio, 0.0)
    return kl_reward + _last_valid_token(mask) * rewards[:, None]


def whiten(x, mask, eps=WHITEN_EPS):
    """Batch whitening over valid tokens: `(x - mu) * rsqrt(var + eps)`, population variance.

    Args:
      x: `[...]` float values.
      mask: same shape; statistics use only valid slots.
    Returns:
      float32 array of x's shape, 0 at masked slots.
    """
    mask = jnp.asarray(mask, jnp.float32)
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, ddof=0)
    return jnp.where(mask != 0, (x - mean) * jax.lax.rsqrt(var + eps), 0.0)


def reinforce_pp_advantages(rewards, mask, old_logp, ref_logp, *, kl_coef, group_baseline=False, group_size=None):
    """REINFORCE++ token advantages (docs/algorithms.md#reinforce-and-reinforce-baseline).

    Token rewards with k1 KL penalty and outcome at the last token, undiscounted return-to-go,
    then whitening over all valid tokens of the batch. With `group_baseline=True`
    (REINFORCE++-baseline) the group mean of the outcome reward is subtracted first; sequences
    are then grouped as consecutive rows of `group_size`.

    Args:
      rewards: `[N]` float outcome rewards.
      mask: `[N, T]` completion mask.
      old_logp, ref_logp: `[N, T]` float log-probs (constants).
      kl_coef: float KL-in-reward coefficient.
      group_baseline: subtract the per-group mean of `rewards` first.
      group_size: G, required with `group_baseline`; N must be a multiple of it.
    Returns:
      `[N, T]` float32 advantages, 0 at padding.
    """
    rewards = jnp.asarray(rewards, jnp.float32)
    if group_baseline:
        if group_size is None:
            raise ValueError("group_baseline=True needs group_size")
        grouped = rewards.reshape(-1, group_size)
        rewards = (grouped - jnp.mean(grouped, axis=-1, keepdims=True)).reshape(-1)
    token_rewards = outcome_token_rewards(rewards, mask, old_logp, ref_logp, kl_coef)
    returns = jnp.flip(jnp.cumsum(jnp.flip(token_rewards, -1), axis=-1), -1)
    return whiten(returns, mask)


def gae_advantages(token_rewards, values, mask, *, gamma, lam):
    """Generalised advantage estimation by a backward scan (docs/algorithms.md#ppo-value-head-and-gae).

    `delta_t = r_t + gamma V_{t+1} - V_t`, `A_t = delta_t + gamma lam A_{t+1}`, `R_t = A_t + V_t`.
    Masked slots are skipped: the next value/advantage seen by a valid token is the one of the
    next valid token, and 0 after the last valid token. Advantages are not whitened (see
    `whiten`).

    Args:
      token_rewards: `[N, T]` float token rewards (e.g. from `outcome_token_rewards`).
      values: `[N, T]` float old value predictions (constants).
      mask: `[N, T]` completion mask.
      gamma, lam: discount and GAE lambda.
    Returns:
      (advantages `[N, T]` float32, returns `[N, T]` float32), both 0 at padding.
    """
    mask = jnp.asarray(mask, jnp.float32)
    valid = mask != 0
    rewards = jnp.where(valid, jax.lax.stop_gradient(jnp.asarray(token_rewards, jnp.float32)), 0.0)
    values = jnp.where(valid, jax.lax.stop_gradient(jnp.asarray(values, jnp.float32)), 0.0)

    def step(carry, inputs):
        next_value, next_advantage = carry
        reward_t, value_t, valid_t = inputs
        delta = reward_t + gamma * next_value - value_t
        advantage = delta + gamma * lam * next_advantage
        carry = (jnp.where(valid_t, value_t, next_value), jnp.where(valid_t, advantage, next_advantage))
        return carry, jnp.where(valid_t, advantage, 0.0)

    zeros = jnp.zeros(rewards.shape[:-1], jnp.float32)
    _, advantages = jax.lax.scan(step, (zeros, zeros), (rewards.T, values.T, valid.T), reverse=True)
    advantages = advantages.T
    returns = jnp.where(valid, advantages + values, 0.0)
    return advantages, returns


def task_relative_advantages(rewards, class_ids, num_classes, eps=1e-6, *, valid=None, std_ddof=1):
    """TRR++ advantages: normalise rewards within each class over the batch
    (docs/algorithms.md#absolute-zero-rewards-and-trr).

    `A = (r - mean_c) / (std_c + eps)` where c = class_ids (Absolute Zero: role x task type,
    6 classes). Statistics use only rows with `valid`.

    Args:
      rewards: `[N]` float rewards.
      class_ids: `[N]` int32 class of each row, in `[0, num_classes)`.
      num_classes: static number of classes.
      eps: added to the std outside the sqrt.
      valid: optional `[N]` bool; invalid rows do not enter the statistics and get advantage 0.
      std_ddof: 1 for the unbiased std (library default, as for GRPO), 0 for population std.
    Returns:
      `[N]` float32 advantages.
    """
    rewards = jax.lax.stop_gradient(jnp.asarray(rewards, jnp.float32))
    class_ids = jnp.asarray(class_ids, jnp.int32)
    weight = jnp.ones_like(rewards) if valid is None else jnp.asarray(valid, jnp.float32)
    rewards = jnp.where(weight != 0, rewards, 0.0)

    def per_class_sum(x):
        return jax.ops.segment_sum(x * weight, class_ids, num_segments=num_classes)

    count = per_class_sum(jnp.ones_like(rewards))
    class_mean = per_class_sum(rewards) / jnp.maximum(count, 1.0)
    centered = rewards - class_mean[class_ids]
    class_var = per_class_sum(jnp.square(centered)) / jnp.maximum(count - std_ddof, 1.0)
    advantages = centered / (jnp.sqrt(class_var)[class_ids] + eps)
    return jnp.where(weight != 0, advantages, 0.0)
