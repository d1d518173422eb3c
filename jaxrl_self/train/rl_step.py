"""The RL learner: rewards and advantages of a rollout batch, the loss of each algorithm, and the jitted
update (epochs x minibatches x gradient-accumulated micro-batches over one rollout batch).

Algorithms (`config.rl.algorithm`, docs/algorithms.md#choosing-an-algorithm-in-the-config): grpo, dr_grpo, dapo, gspo, rloo,
reinforce_pp, ppo, nft, nsr. Where the KL to the reference goes (docs/algorithms.md#kl-to-the-reference-placement-and-estimators):
  grpo, dr_grpo, gspo   k3 loss term `kl_coef * agg(k3)`
  rloo                  sequence k1 penalty in the reward `R - kl_coef * sum_t (old - ref)`
  reinforce_pp, ppo     token k1 penalty in the reward
  dapo, nft, nsr        none
PPO's critic is a value head on the policy's hidden states (`train.value_head`).

The train batch is a `train.batch.RolloutBatch` (its docstring lists every field's shape and when
it is present) over N = B*G rows; `make_batch_builder` builds it from a scored rollout.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_self.algorithms import advantages as adv
from jaxrl_self.algorithms.aggregation import aggregate, masked_mean, masked_sum
from jaxrl_self.algorithms.filtering import group_has_signal, overlong_penalty
from jaxrl_self.algorithms.kl import kl_penalty
from jaxrl_self.algorithms.losses import clipped_surrogate, gspo_loss, nft_loss, value_loss
from jaxrl_self.algorithms.registry import algorithm_of
from jaxrl_self.models.lora import dropout_key as lora_dropout_key, split_adapters
from jaxrl_self.parallel.rules import activation_mesh
from jaxrl_self.rewards.host import FAILURE_REASONS
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.algorithms.self_verification import blend_self_advantages, class_balance_weights, self_reward_scores
from jaxrl_self.train.policy import completion_logprobs, completion_logprobs_and_verdict, verdict_logprobs
from jaxrl_self.train.state import apply_gradients
from jaxrl_self.train.value_head import completion_logprobs_and_values, frozen, trainable, with_trainable

def aggregation_mode(rl) -> str:
    return rl.loss_aggregation or algorithm_of(rl).aggregation


def needs_reference(rl) -> bool:
    """Whether the algorithm uses a frozen reference policy (a KL term with kl_coef > 0)."""
    return rl.kl_coef > 0 and algorithm_of(rl).kl != "none"


def needs_old_logp(rl) -> bool:
    """Whether old log-probs must be recomputed at rollout time: several optimizer steps per
    rollout (rho != 1), a KL penalty in the reward, or a value head (PPO)."""
    multi_step = rl.epochs * rl.minibatches > 1
    return multi_step or algorithm_of(rl).value_head or (needs_reference(rl) and algorithm_of(rl).kl == "reward")


def compute_advantages(rl, rewards, mask, old_logp=None, ref_logp=None, old_values=None):
    """Advantages (and PPO's value targets) of one rollout batch.

    Args:
      rl: `config.rl`.
      rewards: `[N]` float32 outcome rewards, N = B*G.
      mask: `[N, T]` completion mask (all generated tokens, before any group filtering).
      old_logp, ref_logp: `[N, T]` float32 or None; the KL penalty in the reward (rloo,
        reinforce_pp, ppo) needs both and is off without a reference.
      old_values: `[N, T]` float32 value predictions at rollout time (PPO).
    Returns:
      {"advantages": `[N]` (outcome methods) or `[N, T]` (reinforce_pp, ppo)}, plus "returns"
      `[N, T]` for PPO. Constants.
    """
    grouped = rewards.reshape(-1, rl.group_size)
    estimator = algorithm_of(rl).advantages
    if estimator == "group":
        return {"advantages": adv.group_advantages(grouped, std_ddof=rl.std_ddof, eps=rl.advantage_eps).reshape(-1)}
    if estimator == "group_no_std":
        return {"advantages": adv.group_advantages(grouped, normalize_std=False).reshape(-1)}
    if estimator == "binary_group_no_std":
        return {"advantages": adv.group_advantages(adv.binary_rewards(grouped), normalize_std=False).reshape(-1)}
    if estimator == "signed":
        return {"advantages": adv.signed_advantages(rewards, pos_weight=rl.nsr.pos_weight, neg_weight=rl.nsr.neg_weight)}
    if ref_logp is None:  # no reference: no KL penalty in the reward
        kl_coef, old_logp, ref_logp = 0.0, jnp.zeros_like(mask), jnp.zeros_like(mask)
    else:
        kl_coef = rl.kl_coef
    if estimator == "rloo":
        if kl_coef > 0:
            rewards = rewards - kl_coef * masked_sum(old_logp - ref_logp, mask, axis=-1)
        return {"advantages": adv.rloo_advantages(rewards.reshape(-1, rl.group_size)).reshape(-1)}
    if estimator == "reinforce_pp":
        return {"advantages": adv.reinforce_pp_advantages(rewards, mask, old_logp, ref_logp, kl_coef=kl_coef,
                                                          group_baseline=rl.reinforce_pp.group_baseline, group_size=rl.group_size)}
    if estimator == "gae":
        token_rewards = adv.outcome_token_rewards(rewards, mask, old_logp, ref_logp, kl_coef)
        advantages, returns = adv.gae_advantages(token_rewards, old_values, mask, gamma=rl.ppo.gamma, lam=rl.ppo.gae_lambda)
        return {"advantages": adv.whiten(advantages, mask), "returns": returns}
    raise NotImplementedError(f"advantage estimator {estimator!r} (rl.algorithm={rl.algorithm!r})")


def _masked_extremes(x, mask):
    """(min, max) of `x [N, T]` over valid slots; (1, 1) when none is valid (ratio statistics)."""
    valid = mask != 0
    has = jnp.any(valid)
    low = jnp.min(jnp.where(valid, x, jnp.inf))
    high = jnp.max(jnp.where(valid, x, -jnp.inf))
    return jnp.where(has, low, 1.0), jnp.where(has, high, 1.0)


def policy_loss(model, batch, rl, num_sequences, num_tokens, value_params=None, verdict_id=None, dropout_key=None):
    """Scalar loss and metrics of one (micro-)batch.

    Args:
      model: the policy (`Transformer`).
      batch: `RolloutBatch` of n rows.
      rl: `config.rl`.
      num_sequences, num_tokens: float32 scalars, sequences with a valid token and valid tokens of
        the whole optimizer batch; summing losses (and gradients) over micro-batches then gives
        the full-batch value.
      value_params: PPO's value head, else None.
      verdict_id: LaSeR's reserved token; with it and `batch.verdict_labels` the loss adds the
        self-verification term (`RolloutBatch`), logged as "self_verify/loss".
      dropout_key: the LoRA adapters' dropout key of this forward (`make_rl_update`), or None.
    Returns:
      (loss, metrics); metrics are this micro-batch's share of the optimizer-batch value (sum
      them over micro-batches), except "ratio/min" and "ratio/max" (take min / max).
    """
    mask = batch.completion_mask.astype(jnp.float32)
    args = (batch.prompt_tokens, batch.prompt_mask, batch.completion_tokens, batch.attended_mask(), rl.temperature)
    verdict = verdict_id is not None and batch.verdict_labels is not None
    if verdict:
        logp, entropy, lz = completion_logprobs_and_verdict(model, *args, verdict_id, dropout_key=dropout_key)
    elif value_params is None:
        logp, entropy = completion_logprobs(model, *args, with_entropy=True, dropout_key=dropout_key)
    else:
        logp, entropy, values = completion_logprobs_and_values(model, value_params, *args, dropout_key=dropout_key)
    old_logp = jax.lax.stop_gradient(logp) if batch.old_logp is None else batch.old_logp
    mode = aggregation_mode(rl)
    agg = lambda per_token: aggregate(per_token, mask, mode, t_const=rl.max_new_tokens, num_sequences=num_sequences,
                                      num_tokens=num_tokens)
    share = jnp.sum(jnp.any(mask > 0, axis=-1)) / jnp.maximum(num_sequences, 1.0)  # metrics sum to batch means
    if algorithm_of(rl).loss == "gspo":
        per_sequence, stats = gspo_loss(logp, old_logp, batch.advantages, mask, eps_low=rl.eps_low, eps_high=rl.eps_high)
        loss = jnp.sum(per_sequence) / jnp.maximum(num_sequences, 1.0)
        stats = {k: jnp.broadcast_to(v[:, None], mask.shape) for k, v in stats.items()}
    elif algorithm_of(rl).loss == "nft":
        per_token, stats = nft_loss(logp, old_logp, batch.advantages, mask, weighting=rl.nft.weighting,
                                    neg_weight=rl.nft.neg_weight, neg_floor=rl.nft.neg_floor, mean_clamp=rl.nft.mean_clamp)
        loss = agg(per_token)
    else:
        per_token, stats = clipped_surrogate(logp, old_logp, batch.advantages, eps_low=rl.eps_low, eps_high=rl.eps_high, mask=mask)
        loss = agg(per_token)
    ratio_min, ratio_max = _masked_extremes(stats["ratio"], mask)
    metrics = {
        "policy_loss": loss,
        "entropy": masked_mean(entropy, mask) * share,
        "ratio/mean": masked_mean(stats["ratio"], mask) * share,
        "ratio/min": ratio_min,
        "ratio/max": ratio_max,
        "clip_fraction/low": masked_mean(stats["clipped_low"], mask) * share,
        "clip_fraction/high": masked_mean(stats["clipped_high"], mask) * share,
    }
    if batch.ref_logp is not None:
        kl = kl_penalty(logp, batch.ref_logp, "k3")
        if batch.kl_coef is not None:  # a recipe's coefficients: per row `[n]` (SCoRe) or per token `[n, T]` (SPIRAL)
            coef = batch.kl_coef[:, None] if batch.kl_coef.ndim == 1 else batch.kl_coef
            loss = loss + agg(coef * kl)
        elif algorithm_of(rl).kl == "loss":
            loss = loss + rl.kl_coef * agg(kl)
        metrics["kl"] = masked_mean(kl, mask) * share
    if rl.entropy_coef > 0:
        loss = loss - rl.entropy_coef * agg(entropy)
    if verdict:
        scores = self_reward_scores(lz, beta_v=rl.self_verify.beta, c_ref=rl.self_verify.c_ref)
        self_verify = jnp.sum(batch.verdict_weights * (scores - batch.verdict_labels) ** 2) / jnp.maximum(num_sequences, 1.0)
        loss = loss + self_verify
        metrics["self_verify/loss"] = self_verify
    if value_params is not None:
        v_loss = agg(value_loss(values, batch.old_values, batch.returns, mask, clip_eps=rl.ppo.value_clip_eps))
        loss = loss + rl.ppo.value_coef * v_loss
        clipped = (jnp.abs(values - batch.old_values) > rl.ppo.value_clip_eps).astype(jnp.float32)
        metrics.update({"value_loss": v_loss, "value/clip_fraction": masked_mean(clipped, mask) * share})
    metrics["loss"] = loss
    return loss, metrics


def _reduce_metrics(stacked, mean_or_sum):
    """Stacked metrics `[K]` -> scalars: min for ".../min", max for ".../max", else `mean_or_sum`."""
    def reduce(name, values):
        if name.endswith("/min"):
            return jnp.min(values)
        if name.endswith("/max"):
            return jnp.max(values)
        return mean_or_sum(values)
    return {name: reduce(name, values) for name, values in stacked.items()}


def make_rl_update(graphdef, optimizer, rl, mesh=None, verdict_id=None):
    """Jitted `update(state, batch, key) -> (state, metrics)` on a `RolloutBatch`; `state` is donated
    (its buffers are reused for the new state: do not read the old one after the call).

    For each of `rl.epochs` passes the N rows are shuffled (when there is more than one minibatch)
    and cut into `rl.minibatches` minibatches; each minibatch is one optimizer step whose gradient
    is summed over `rl.micro_batches` micro-batches (a `lax.scan`), with the minibatch's global
    denominators, in float32 whatever the params' dtype (a micro-batch's gradient has the params'
    dtype, bfloat16 with `model.param_dtype = "bfloat16"`). Metrics are averaged over optimizer
    steps (min/max statistics: min/max).
    mesh: the mesh whose axes the model's activations are constrained to (`parallel.activation_mesh`).
    verdict_id: LaSeR's reserved token (`policy_loss`).
    LoRA adapter dropout (`model.lora.dropout` > 0, docs/lora.md#adapter-dropout): each micro-batch's
    forward gets its own key, split from `lora.dropout_key(..., key)` per optimizer step, then per
    micro-batch; with p = 0 no key exists and the program is that of a run without dropout.
    """
    with_value_head = algorithm_of(rl).value_head

    def loss_fn(params, frozen_params, micro_batch, num_sequences, num_tokens, dropout_key):
        policy_params, value_params = (params["policy"], params["value_head"]) if with_value_head else (params, None)
        return policy_loss(nnx.merge(graphdef, frozen_params, policy_params), micro_batch, rl, num_sequences, num_tokens,
                           value_params, verdict_id, dropout_key)

    def grads_of_minibatch(params, frozen_params, minibatch, dropout_key):
        mask = minibatch.completion_mask.astype(jnp.float32)
        num_sequences = jnp.sum(jnp.any(mask > 0, axis=-1).astype(jnp.float32))
        num_tokens = jnp.sum(mask)
        micro_batches = jax.tree.map(lambda x: x.reshape(rl.micro_batches, -1, *x.shape[1:]), minibatch)
        micro_keys = None if dropout_key is None else jax.random.split(dropout_key, rl.micro_batches)

        def accumulate(grads, xs):
            micro_batch, micro_key = xs
            (_, metrics), micro_grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frozen_params, micro_batch,
                                                                                  num_sequences, num_tokens, micro_key)
            return jax.tree.map(jnp.add, grads, micro_grads), metrics

        zeros = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params)
        grads, metrics = jax.lax.scan(accumulate, zeros, (micro_batches, micro_keys))
        return grads, _reduce_metrics(metrics, jnp.sum)

    @functools.partial(jax.jit, donate_argnums=0)
    def update(state, batch, key):
        with activation_mesh(mesh):
            return _update(state, batch, key)

    def _update(state, batch, key):
        rows = batch.completion_mask.shape[0]
        if rl.minibatches > 1:
            orders = jnp.stack([jax.random.permutation(jax.random.fold_in(key, epoch), rows) for epoch in range(rl.epochs)])
        else:
            orders = jnp.tile(jnp.arange(rows), (rl.epochs, 1))
        orders = orders.reshape(rl.epochs * rl.minibatches, rows // rl.minibatches)
        dropout_key = lora_dropout_key(nnx.merge(graphdef, state.params).config.lora, key)  # None without dropout
        step_keys = None if dropout_key is None else jax.random.split(dropout_key, len(orders))

        def optimizer_step(state, xs):
            order, step_key = xs
            params = trainable(state)
            grads, metrics = grads_of_minibatch(params, frozen(state), jax.tree.map(lambda x: x[order], batch), step_key)
            stepped, update_metrics = apply_gradients(state.replace(params=params), grads, optimizer, metrics["loss"])
            state = with_trainable(state.replace(opt_state=stepped.opt_state, step=stepped.step), stepped.params)
            return state, {**metrics, **update_metrics}

        state, metrics = jax.lax.scan(optimizer_step, state, (orders, step_keys))
        return state, _reduce_metrics(metrics, jnp.mean)

    return update


def make_reward_scorer(rl, method):
    """Jitted `score_rewards(batch, reference_bytes) -> (rewards, metrics)`.

    rewards: `method.reward_fn`'s per-row components `[N]` ("reward" first among them), with the
    DAPO overlong penalty added to "reward" (and logged as "overlong_penalty") when
    `rl.overlong_max_len > 0`. metrics: "reward/<component>" means and "verifier_failures/<reason>"
    counts.
    """

    @jax.jit
    def score_rewards(batch, reference_bytes):
        rewards = dict(method.reward_fn(batch, reference_bytes))
        failures = rewards.pop("verifier_failures", None)
        if rl.overlong_max_len > 0:
            lengths = jnp.sum(batch["completion_mask"].astype(jnp.float32), axis=-1)
            rewards["overlong_penalty"] = overlong_penalty(lengths, max_len=rl.overlong_max_len, cache_len=rl.overlong_cache_len)
            rewards["reward"] = rewards["reward"] + rewards["overlong_penalty"]
        metrics = {f"reward/{k}": jnp.mean(v) for k, v in rewards.items()}
        if failures is not None:
            metrics.update({f"verifier_failures/{name}": failures[i] for i, name in enumerate(FAILURE_REASONS)})
        return rewards, metrics

    return score_rewards


def make_batch_builder(graphdef, rl, method, mesh=None, verdict_id=None):
    """Jitted `build(state, batch, rewards, group_valid, key) -> (RolloutBatch, metrics)`.

    `batch` is the scored rollout (the dict `method.reward_fn` reads, `methods.base`), whose prompt
    and completion arrays the `RolloutBatch` keeps. Recomputes old log-probs (when
    `needs_old_logp`), reference log-probs (when the state holds a reference) and PPO's old values
    under the state's params, computes advantages from all G rewards of every group, zeroes the
    completion_mask rows of groups with `group_valid` False `[B]`, and lets `method.select_rows`
    pick the rows to train on. metrics:
    "groups/with_signal" (fraction of groups whose rewards are not all equal) and, for PPO,
    "value/mean" and "returns/mean". mesh: as for `make_rl_update`.

    verdict_id: LaSeR's reserved token; `batch` then also holds "finished" `[N]` (ended with the
    stop token), "verdict_coef" `[N]` (alpha this step) and "verdict_blend" `[N]` (lambda this step),
    and the `RolloutBatch` gets the verifier's labels ("correct", else reward > 0.5) and the
    class-balanced loss weights; with "verdict_blend" > 0 the advantages are blended with the
    self-rewards' (`blend_self_advantages`, one more forward pass under the policy).
    """
    with_old_logp = needs_old_logp(rl)

    @jax.jit
    def build(state, batch, rewards, group_valid, key):
        with activation_mesh(mesh):
            return _build(state, batch, rewards, group_valid, key)

    def _build(state, batch, rewards, group_valid, key):
        mask = batch["completion_mask"].astype(jnp.float32)
        env_mask = batch.get("env_mask")  # context inside the completions, read but not trained (RolloutBatch)
        attended = batch["completion_mask"] if env_mask is None else batch["completion_mask"] | env_mask
        args = (batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], attended, rl.temperature)
        model = nnx.merge(graphdef, state.params)
        old_logp = ref_logp = old_values = None
        if state.value_params is not None:
            logp, _, values = completion_logprobs_and_values(model, state.value_params, *args)
            old_values = jax.lax.stop_gradient(values)
        elif with_old_logp:
            logp = completion_logprobs(model, *args)[0]
        if with_old_logp:
            old_logp = jax.lax.stop_gradient(logp)
        if state.ref_params is not None:
            ref_logp = reference_logprobs(graphdef, state, args)
        row_valid = jnp.repeat(group_valid, rl.group_size)
        train_batch = RolloutBatch(
            prompt_tokens=batch["prompt_tokens"], prompt_mask=batch["prompt_mask"],
            completion_tokens=batch["completion_tokens"],
            completion_mask=jnp.where(row_valid[:, None], batch["completion_mask"], jnp.zeros_like(batch["completion_mask"])),
            old_logp=old_logp, ref_logp=ref_logp, old_values=old_values, env_mask=env_mask,
            **compute_advantages(rl, rewards["reward"], mask, old_logp, ref_logp, old_values))
        if verdict_id is not None:
            train_batch = _with_verdicts(model, train_batch, batch, rewards, row_valid)
        metrics = {"groups/with_signal": jnp.mean(group_has_signal(rewards["reward"].reshape(-1, rl.group_size)))}
        if old_values is not None:
            metrics.update({"value/mean": masked_mean(old_values, mask), "returns/mean": masked_mean(train_batch.returns, mask)})
        return method.select_rows(train_batch, rewards, key), metrics

    def _with_verdicts(model, train_batch, batch, rewards, row_valid):
        """`train_batch` with LaSeR's labels and weights, and its advantages blended when asked."""
        sv, g = rl.self_verify, rl.group_size
        labels = jnp.asarray(rewards["correct"] if "correct" in rewards else adv.binary_rewards(rewards["reward"]), jnp.float32)
        finished = batch["finished"] & row_valid
        train_batch = train_batch.replace(verdict_labels=labels,
                                          verdict_weights=batch["verdict_coef"] * class_balance_weights(labels, finished))
        if sv.advantage_coef <= 0:
            return train_batch
        blend = batch["verdict_blend"]

        def blended():
            args = (batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], batch["completion_mask"])
            lz = verdict_logprobs(model, *args, verdict_id)
            scores = self_reward_scores(lz, beta_v=sv.beta, c_ref=sv.c_ref)
            return blend_self_advantages(train_batch.advantages.reshape(-1, g), scores.reshape(-1, g), finished.reshape(-1, g),
                                         coef=blend.reshape(-1, g), min_std=sv.min_std, std_ddof=rl.std_ddof).reshape(-1)

        return train_batch.replace(advantages=jax.lax.cond(jnp.any(blend > 0), blended, lambda: train_batch.advantages))

    return build


def reference_logprobs(graphdef, state, args):
    """Log-probs `[N, T]` under the frozen reference `state.ref_params` (constant; for a LoRA model
    its adapters on the policy's own base); `args`:
    `(prompt_tokens, prompt_mask, completion_tokens, completion_mask, temperature)` of `completion_logprobs`."""
    return jax.lax.stop_gradient(completion_logprobs(nnx.merge(graphdef, frozen(state), state.ref_params), *args)[0])


def make_reference_scorer(graphdef, rl, mesh=None):
    """Jitted `(state, batch) -> batch with ref_logp [N, T]`, for recipes that build their own
    `RolloutBatch` (advantages and, for a per-row or per-token KL, kl_coef `[N]` or `[N, T]`) for `make_rl_update`."""

    @jax.jit
    def with_reference(state, batch):
        args = (batch.prompt_tokens, batch.prompt_mask, batch.completion_tokens, batch.attended_mask(), rl.temperature)
        with activation_mesh(mesh):
            return batch.replace(ref_logp=reference_logprobs(graphdef, state, args))

    return with_reference


def refresh_reference(state, rl, rl_step: int):
    """Copies the policy params into the reference every `rl.ref_refresh_every` RL steps (0 = never),
    in the reference's own dtypes."""
    if state.ref_params is None or rl.ref_refresh_every <= 0 or rl_step % rl.ref_refresh_every:
        return state
    policy = split_adapters(state.params)[0]  # a LoRA model's reference is its adapters
    return state.replace(ref_params=jax.tree.map(lambda p, r: jnp.array(p, r.dtype, copy=True), policy, state.ref_params))
