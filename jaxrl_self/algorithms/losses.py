"""Policy-gradient, value and preference losses (equations and worked examples: docs/algorithms.md).

Per-token losses are returned unaggregated; reduce them with `aggregation.aggregate`.
"""

import jax
import jax.numpy as jnp

from jaxrl_self.algorithms.aggregation import masked_mean, masked_sum

LOG_RATIO_CLAMP = 20.0


def token_logprobs(logits, tokens):
    """Log-probability of each given token: `logits[tok] - logsumexp(logits)` in float32.

    Args:
      logits: `[N, T, V]` float logits (any float dtype) predicting `tokens`.
      tokens: `[N, T]` int32 token ids.
    Returns:
      `[N, T]` float32 log-probs.
    """
    logits = jnp.asarray(logits, jnp.float32)
    picked = jnp.take_along_axis(logits, jnp.asarray(tokens, jnp.int32)[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def token_entropy(logits):
    """Entropy of the full-vocabulary distribution `H = logsumexp(z) - sum_v softmax(z)_v z_v`.

    Args:
      logits: `[..., V]` float logits; -inf entries (masked vocabulary) are allowed.
    Returns:
      `[...]` float32 entropies.
    """
    logits = jnp.asarray(logits, jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1)
    finite_logits = jnp.where(jnp.isfinite(logits), logits, 0.0)
    return jax.nn.logsumexp(logits, axis=-1) - jnp.sum(probs * finite_logits, axis=-1)


def _broadcast_advantages(advantages, logp):
    advantages = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
    if advantages.ndim == logp.ndim - 1:
        advantages = advantages[..., None]
    return advantages


def _clip_stats(ratio, advantages, eps_low, eps_high):
    ratio = jax.lax.stop_gradient(ratio)
    return {
        "ratio": ratio,
        "clipped_low": ((ratio < 1.0 - eps_low) & (advantages < 0)).astype(jnp.float32),
        "clipped_high": ((ratio > 1.0 + eps_high) & (advantages > 0)).astype(jnp.float32),
    }


def clipped_surrogate(logp, old_logp, advantages, *, eps_low, eps_high, mask=None):
    """PPO clipped surrogate per token: `-min(rho A, clip(rho, 1-eps_low, 1+eps_high) A)`.

    `rho = exp(clamp(logp - stop_gradient(old_logp), -20, 20))`; with `logp == old_logp` the
    gradient is the REINFORCE gradient `-A grad logp`.

    Args:
      logp: `[N, T]` float32 current log-probs (differentiable).
      old_logp: `[N, T]` float32 log-probs under pi_old (constant).
      advantages: `[N]` (broadcast over T) or `[N, T]` float advantages (constant).
      eps_low, eps_high: clip range (DAPO clip-higher when they differ).
      mask: optional `[N, T]` completion mask; padding slots then get loss 0 and ratio 1 even
        if their log-probs are NaN/Inf (the aggregation masks them anyway).
    Returns:
      (per-token loss `[N, T]` float32, stats) where stats holds per-token float32 `[N, T]`
      arrays `ratio`, `clipped_low` (1 where the lower clip is active: rho < 1-eps_low, A < 0)
      and `clipped_high` (rho > 1+eps_high, A > 0); aggregate them with `masked_mean`.
    """
    logp = jnp.asarray(logp, jnp.float32)
    advantages = _broadcast_advantages(advantages, logp)
    log_ratio = logp - jax.lax.stop_gradient(jnp.asarray(old_logp, jnp.float32))
    if mask is not None:
        log_ratio = jnp.where(jnp.asarray(mask) != 0, log_ratio, 0.0)
    ratio = jnp.exp(jnp.clip(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    per_token_loss = -jnp.minimum(unclipped, clipped)
    if mask is not None:
        per_token_loss = jnp.where(jnp.asarray(mask) != 0, per_token_loss, 0.0)
    stats = _clip_stats(ratio, jnp.broadcast_to(advantages, ratio.shape), eps_low, eps_high)
    return per_token_loss, stats


def gspo_loss(logp, old_logp, advantages, mask, *, eps_low, eps_high):
    """GSPO sequence-level clipped loss (docs/algorithms.md#gspo).

    `s_i = exp(masked_mean_t(logp - stop_gradient(old_logp)))`,
    loss_i = `-min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)`; rows without valid tokens
    get loss 0. The caller means over sequences.

    Args:
      logp: `[N, T]` float32 current log-probs (differentiable).
      old_logp: `[N, T]` float32 log-probs under pi_old (constant).
      advantages: `[N]` float sequence advantages (constant).
      mask: `[N, T]` completion mask.
    Returns:
      (per-sequence loss `[N]` float32, stats with `[N]` float32 `ratio`, `clipped_low`,
      `clipped_high`).
    """
    logp = jnp.asarray(logp, jnp.float32)
    advantages = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
    token_log_ratio = logp - jax.lax.stop_gradient(jnp.asarray(old_logp, jnp.float32))
    seq_log_ratio = jnp.clip(masked_mean(token_log_ratio, mask, axis=-1), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = jnp.exp(seq_log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    has_tokens = jnp.sum(jnp.asarray(mask, jnp.float32), axis=-1) > 0
    per_sequence_loss = jnp.where(has_tokens, -jnp.minimum(unclipped, clipped), 0.0)
    return per_sequence_loss, _clip_stats(ratio, advantages, eps_low, eps_high)


NFT_WEIGHTINGS = ("unit", "dr_grpo", "grpo")


def nft_prompt_weight(reward_mean, weighting):
    """NFT's weight `omega(r_q)` of a prompt's tokens (docs/algorithms.md#nft-and-negative-sample-reinforcement).

    Args:
      reward_mean: `[...]` float r_q in (0, 1), the fraction of positive completions of the prompt.
      weighting: "unit" (omega = 1), "dr_grpo" (1 - r_q) or "grpo" (sqrt((1 - r_q) / r_q)).
    Returns:
      `[...]` float32 omega.
    """
    reward_mean = jnp.asarray(reward_mean, jnp.float32)
    if weighting == "unit":
        return jnp.ones_like(reward_mean)
    if weighting == "dr_grpo":
        return 1.0 - reward_mean
    if weighting == "grpo":
        return jnp.sqrt((1.0 - reward_mean) / reward_mean)
    raise ValueError(f"unknown NFT weighting {weighting!r}; expected one of {NFT_WEIGHTINGS}")


def nft_loss(logp, old_logp, advantages, mask, *, weighting, neg_weight, neg_floor, mean_clamp):
    """Negative-aware fine-tuning per token (docs/algorithms.md#nft-and-negative-sample-reinforcement).

    A row's advantage is `A = c - r_q` with c = 1 for a positive and 0 for a negative completion
    and r_q the mean of c over its group (`group_advantages(binary_rewards(r), normalize_std=False)`),
    so `c = [A > 0]` and `r_q = c - A`, clamped to `[mean_clamp, 1 - mean_clamp]`. With the token
    ratio `R_t = exp(logp_t - stop_gradient(old_logp_t))` and `omega = nft_prompt_weight(r_q)`:

        positive:  l_t = -omega * log R_t
        negative:  l_t = -omega * neg_weight * log floor((1 - r_q R_t) / (1 - r_q))

    `floor(x) = x + stop_gradient(max(x, neg_floor) - x)`: the value is floored (keeping the log
    finite when `r_q R_t >= 1`), the gradient is x's. At `R = 1` the gradient w.r.t. logp is
    `-omega` for positives and `omega * neg_weight * r_q / (1 - r_q)` for negatives. Rows with
    `A = 0` (groups whose completions are all positive or all negative) get loss 0.

    Args:
      logp: `[N, T]` float32 current log-probs (differentiable).
      old_logp: `[N, T]` float32 log-probs under pi_old (constant).
      advantages: `[N]` float `c - r_q` (constant).
      mask: `[N, T]` completion mask; padding slots get loss 0 and ratio 1.
      weighting: one of `NFT_WEIGHTINGS`.
      neg_weight: weight of the negatives' loss (0: rejection-sampling fine-tuning).
      neg_floor: the floor c_neg of the negative policy's ratio, in (0, 1].
      mean_clamp: r_q is clamped to `[mean_clamp, 1 - mean_clamp]`.
    Returns:
      (per-token loss `[N, T]` float32, stats) with per-token float32 `[N, T]` arrays `ratio`,
      `clipped_low` (1 on negative tokens whose floor is active) and `clipped_high` (all 0: NFT
      does not clip positives).
    """
    logp = jnp.asarray(logp, jnp.float32)
    valid = jnp.asarray(mask) != 0
    advantages = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
    positive = advantages > 0
    has_signal = advantages != 0
    reward_mean = jnp.clip(positive - advantages, mean_clamp, 1.0 - mean_clamp)
    reward_mean = jnp.where(has_signal, reward_mean, 0.5)[:, None]  # any finite value: these rows carry no loss
    omega = nft_prompt_weight(reward_mean, weighting)
    log_ratio = jnp.where(valid, logp - jax.lax.stop_gradient(jnp.asarray(old_logp, jnp.float32)), 0.0)
    log_ratio = jnp.clip(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = jnp.exp(log_ratio)
    negative_ratio = (1.0 - reward_mean * ratio) / (1.0 - reward_mean)
    floored = negative_ratio + jax.lax.stop_gradient(jnp.maximum(negative_ratio, neg_floor) - negative_ratio)
    per_token = omega * jnp.where(positive[:, None], -log_ratio, -neg_weight * jnp.log(floored))
    carries_loss = valid & has_signal[:, None]
    per_token = jnp.where(carries_loss, per_token, 0.0)
    floor_active = carries_loss & ~positive[:, None] & (negative_ratio < neg_floor)
    stats = {"ratio": jax.lax.stop_gradient(ratio), "clipped_low": floor_active.astype(jnp.float32),
             "clipped_high": jnp.zeros_like(ratio)}
    return per_token, stats


def value_loss(values, old_values, returns, mask, *, clip_eps):
    """Clipped value loss per token `0.5 * max((V - R)^2, (V_clip - R)^2)`
    (docs/algorithms.md#ppo-value-head-and-gae).

    `V_clip = V_old + clip(V - V_old, -clip_eps, clip_eps)`.

    Args:
      values: `[N, T]` float current value predictions (differentiable).
      old_values: `[N, T]` float values at rollout time (constant).
      returns: `[N, T]` float value targets (constant).
      mask: `[N, T]` completion mask.
    Returns:
      `[N, T]` float32 per-token loss, 0 at padding; aggregate with `aggregate`.
    """
    values = jnp.asarray(values, jnp.float32)
    old_values = jax.lax.stop_gradient(jnp.asarray(old_values, jnp.float32))
    returns = jax.lax.stop_gradient(jnp.asarray(returns, jnp.float32))
    clipped_values = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    per_token = 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(clipped_values - returns))
    return jnp.where(jnp.asarray(mask) != 0, per_token, 0.0)


def sequence_logprob(token_logp, mask):
    """Sequence log-prob `S = sum_t m_t logp_t`.

    Args:
      token_logp: `[N, T]` float token log-probs.
      mask: `[N, T]` completion mask.
    Returns:
      `[N]` float32.
    """
    return masked_sum(token_logp, mask, axis=-1)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta, pair_mask=None):
    """DPO loss `mean softplus(-u)`, `u = beta [(S_w - S_ref,w) - (S_l - S_ref,l)]`
    (docs/algorithms.md#dpo-and-spin-losses).

    Also SPIN with the previous iterate as reference.

    Args:
      policy_chosen, policy_rejected: `[N]` float sequence log-prob sums under the policy.
      ref_chosen, ref_rejected: `[N]` float sequence log-prob sums under the reference (constant).
      beta: inverse temperature.
      pair_mask: optional `[N]` bool; pairs with 0 are ignored (static-shape padding).
    Returns:
      (scalar float32 loss, metrics dict of scalars: `reward_margin` = mean u, `accuracy` =
      fraction of pairs with u > 0, `chosen_reward`, `rejected_reward` = mean implicit rewards).
    """
    chosen_reward = beta * (policy_chosen - jax.lax.stop_gradient(ref_chosen))
    rejected_reward = beta * (policy_rejected - jax.lax.stop_gradient(ref_rejected))
    margin = jnp.asarray(chosen_reward - rejected_reward, jnp.float32)
    pair_mask = jnp.ones_like(margin) if pair_mask is None else jnp.asarray(pair_mask, jnp.float32)
    loss = masked_mean(jax.nn.softplus(-margin), pair_mask)
    metrics = {
        "reward_margin": masked_mean(jax.lax.stop_gradient(margin), pair_mask),
        "accuracy": masked_mean((margin > 0).astype(jnp.float32), pair_mask),
        "chosen_reward": masked_mean(jax.lax.stop_gradient(chosen_reward), pair_mask),
        "rejected_reward": masked_mean(jax.lax.stop_gradient(rejected_reward), pair_mask),
    }
    return loss, metrics


def truncated_importance_weight(old_logp, behaviour_logp, *, cap=2.0):
    """Constant per-token weight `min(exp(old_logp - beh_logp), cap)` correcting sampler drift.

    Multiply the per-token policy loss by it when the inference engine's log-probs differ from
    the trainer's (docs/algorithms.md#clipped-surrogate).

    Args:
      old_logp: `[N, T]` float log-probs recomputed by the training model.
      behaviour_logp: `[N, T]` float log-probs reported by the sampler.
      cap: upper truncation C.
    Returns:
      `[N, T]` float32 stop-gradient weights.
    """
    log_ratio = jnp.asarray(old_logp, jnp.float32) - jnp.asarray(behaviour_logp, jnp.float32)
    weight = jnp.exp(jnp.clip(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    return jax.lax.stop_gradient(jnp.minimum(weight, cap))
