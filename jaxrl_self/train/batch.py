"""The RL learner's train batch."""
from __future__ import annotations

from typing import Optional

import flax.struct
import jax


@flax.struct.dataclass(kw_only=True)
class RolloutBatch:
    """One RL train batch of N rows: the input of `train.rl_step.make_rl_update`.

    Row b*G+g is completion g of prompt b (N = B*G), except in recipes that build their own rows
    (SCoRe: both attempts; Absolute Zero: proposer, then solver rows). Built by
    `rl_step.make_batch_builder` from a scored rollout, or directly by a recipe (then ref_logp by
    `rl_step.make_reference_scorer`). A pytree whose leaves all have N leading rows: `jax.tree.map`
    slices, shuffles and splits it into micro-batches, and `parallel.shard_batch` shards it by
    rows. The optional fields are None when absent (an empty subtree: no leaf), and the update's
    loss then leaves out what needs them.

    Always present:
      prompt_tokens: `[N, P] int32`, left-padded prompts.
      prompt_mask: `[N, P] bool`, the prompt's tokens.
      completion_tokens: `[N, T] int32`, the completions (pad after the stop token).
      completion_mask: `[N, T] bool`, the generated tokens incl. the stop token; rows of groups
        masked out (DAPO dynamic sampling, `rl.filter_zero_advantage_groups`) are all False: they
        carry no loss and count in no denominator.
      advantages: `[N] float32` (outcome estimators: grpo, dr_grpo, dapo, gspo, rloo and the
        recipes' own) or `[N, T] float32` (reinforce_pp, ppo).
    Optional (None when absent):
      old_logp: `[N, T] float32`, log-probs at rollout time under the policy that sampled
        (`rl_step.needs_old_logp`: several optimizer steps per rollout, a KL penalty in the reward,
        or PPO); without it the ratio is taken to the current policy (ratio 1, gradient of logp).
      ref_logp: `[N, T] float32`, log-probs under the frozen reference, when the state holds one;
        with it the loss has the k3 KL term (algorithms whose KL is a loss term, or kl_coef).
      old_values: `[N, T] float32`, PPO's value predictions at rollout time.
      returns: `[N, T] float32`, PPO's value targets.
      kl_coef: `[N] float32` or `[N, T] float32`, a recipe's KL coefficients per row (SCoRe's two
        attempts) or per token (SPIRAL's `method.decision_kl_coef` on each response's first
        token); the KL term is then `agg(kl_coef * k3)` (a `[N]` coefficient broadcast over the
        row's tokens) whatever the algorithm. Needs ref_logp.
      verdict_labels: `[N] float32`, LaSeR: the verifier's 0/1 label of each completion; with it
        the loss adds `sum(verdict_weights * (r_s - verdict_labels)^2) / sequences`
        (docs/algorithms.md#laser-last-token-self-reward).
      verdict_weights: `[N] float32`, the loss weight alpha times the class-balance weight of
        each finished completion (0 for unfinished rows and masked-out groups).
      env_mask: `[N, T] bool`, environment tokens inside the completion (a multi-turn episode's
        observations after the policy's first response, docs/games.md#training-rows): the model
        reads them as context, but completion_mask is False on them, so they carry no loss.
    """

    prompt_tokens: jax.Array
    prompt_mask: jax.Array
    completion_tokens: jax.Array
    completion_mask: jax.Array
    advantages: jax.Array
    old_logp: Optional[jax.Array] = None
    ref_logp: Optional[jax.Array] = None
    old_values: Optional[jax.Array] = None
    returns: Optional[jax.Array] = None
    kl_coef: Optional[jax.Array] = None
    verdict_labels: Optional[jax.Array] = None
    verdict_weights: Optional[jax.Array] = None
    env_mask: Optional[jax.Array] = None

    def attended_mask(self):
        """`[N, T] bool`: the completion positions the model reads, completion_mask | env_mask."""
        return self.completion_mask if self.env_mask is None else self.completion_mask | self.env_mask
