"""The RL learner: advantages from rewards, the policy loss of each algorithm, and the jitted update
(epochs x minibatches x gradient-accumulated micro-batches over one rollout batch).

A rollout batch is a dict of arrays over N = B*G rows (row b*G+g is completion g of prompt b):
prompt_tokens/prompt_mask `[N, P]`, completion_tokens/completion_mask `[N, T]`, advantages `[N]`
or `[N, T]`, and, when needed, old_logp / ref_logp `[N, T]`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_self.algorithms import advantages as adv
from jaxrl_self.algorithms.aggregation import aggregate, masked_mean
from jaxrl_self.algorithms.kl import kl_penalty
from jaxrl_self.algorithms.losses import clipped_surrogate, gspo_loss
from jaxrl_self.rewards.host import FAILURE_REASONS
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.state import apply_gradients

DEFAULT_AGGREGATION = {
    "grpo": "seq_mean_token_mean", "dr_grpo": "seq_mean_token_sum_norm", "dapo": "token_mean",
    "gspo": "seq_mean_token_mean", "rloo": "seq_mean_token_mean", "reinforce_pp": "token_mean", "ppo": "token_mean",
}
KL_IN_LOSS = ("grpo", "dr_grpo", "gspo", "rloo")  # the others use no KL (DAPO) or put it in the reward


def aggregation_mode(rl) -> str:
    return rl.loss_aggregation or DEFAULT_AGGREGATION[rl.algorithm]


def needs_reference(rl) -> bool:
    return rl.kl_coef > 0 and rl.algorithm in KL_IN_LOSS + ("reinforce_pp", "ppo")


def compute_advantages(rl, rewards, mask, old_logp=None, ref_logp=None):
    """Advantages for `rewards [N]` (float32): `[N]` for outcome methods, `[N, T]` for token-level ones."""
    grouped = rewards.reshape(-1, rl.group_size)
    if rl.algorithm in ("grpo", "dapo", "gspo"):
        return adv.group_advantages(grouped, std_ddof=rl.std_ddof, eps=rl.advantage_eps).reshape(-1)
    if rl.algorithm == "dr_grpo":
        return adv.group_advantages(grouped, normalize_std=False).reshape(-1)
    if rl.algorithm == "rloo":
        return adv.rloo_advantages(grouped).reshape(-1)
    if rl.algorithm == "reinforce_pp":
        ref = old_logp if ref_logp is None else ref_logp
        return adv.reinforce_pp_advantages(rewards, mask, old_logp, ref, kl_coef=rl.kl_coef,
                                           group_baseline=rl.group_size > 1, group_size=rl.group_size)
    raise NotImplementedError(f"advantages for rl.algorithm={rl.algorithm!r}")


def policy_loss(model, batch, rl, num_sequences, num_tokens):
    """Scalar loss and metrics of one (micro-)batch, with denominators over the whole optimizer batch."""
    mask = batch["completion_mask"].astype(jnp.float32)
    logp, entropy = completion_logprobs(model, batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"],
                                        batch["completion_mask"], rl.temperature, with_entropy=True)
    old_logp = batch.get("old_logp", jax.lax.stop_gradient(logp))
    mode = aggregation_mode(rl)
    share = mask.shape[0] / num_sequences  # this micro-batch's share: metrics sum to batch means
    if rl.algorithm == "gspo":
        per_sequence, stats = gspo_loss(logp, old_logp, batch["advantages"], mask, eps_low=rl.eps_low, eps_high=rl.eps_high)
        loss = jnp.sum(per_sequence) / num_sequences
        per_token_stats = {k: jnp.broadcast_to(v[:, None], mask.shape) for k, v in stats.items()}
    else:
        per_token, per_token_stats = clipped_surrogate(logp, old_logp, batch["advantages"], eps_low=rl.eps_low, eps_high=rl.eps_high, mask=mask)
        loss = aggregate(per_token, mask, mode, t_const=rl.max_new_tokens, num_sequences=num_sequences, num_tokens=num_tokens)
    metrics = {}
    if "ref_logp" in batch:
        kl = kl_penalty(logp, batch["ref_logp"], "k3")
        if rl.algorithm in KL_IN_LOSS and rl.kl_coef > 0:
            loss = loss + rl.kl_coef * aggregate(kl, mask, mode, t_const=rl.max_new_tokens, num_sequences=num_sequences, num_tokens=num_tokens)
        metrics["kl"] = masked_mean(kl, mask) * share
    if rl.entropy_coef > 0:
        loss = loss - rl.entropy_coef * aggregate(entropy, mask, mode, t_const=rl.max_new_tokens, num_sequences=num_sequences, num_tokens=num_tokens)
    metrics.update({
        "loss": loss,
        "entropy": masked_mean(entropy, mask) * share,
        "ratio/mean": masked_mean(per_token_stats["ratio"], mask) * share,
        "clip_fraction/low": masked_mean(per_token_stats["clipped_low"], mask) * share,
        "clip_fraction/high": masked_mean(per_token_stats["clipped_high"], mask) * share,
    })
    return loss, metrics


def _rows(batch, index):
    return {k: v[index] for k, v in batch.items()}


def make_rl_update(graphdef, optimizer, rl):
    """Jitted `update(state, batch, key) -> (state, metrics)`.

    For each of `rl.epochs` passes the N rows are shuffled (when there is more than one minibatch)
    and cut into `rl.minibatches` minibatches; each minibatch is one optimizer step whose gradient
    is accumulated over `rl.micro_batches` micro-batches with the minibatch's global denominators.
    Metrics are averaged over optimizer steps.
    """
    def grads_of_minibatch(params, minibatch):
        rows = minibatch["completion_mask"].shape[0]
        micro = rows // rl.micro_batches
        num_sequences = jnp.float32(rows)
        num_tokens = jnp.sum(minibatch["completion_mask"].astype(jnp.float32))

        def loss_fn(p, micro_batch):
            return policy_loss(nnx.merge(graphdef, p), micro_batch, rl, num_sequences, num_tokens)

        grads, metrics = None, None
        for m in range(rl.micro_batches):
            micro_batch = _rows(minibatch, slice(m * micro, (m + 1) * micro))
            (_, micro_metrics), micro_grads = jax.value_and_grad(loss_fn, has_aux=True)(params, micro_batch)
            grads = micro_grads if grads is None else jax.tree.map(jnp.add, grads, micro_grads)
            metrics = micro_metrics if metrics is None else jax.tree.map(jnp.add, metrics, micro_metrics)
        return grads, metrics

    @jax.jit
    def update(state, batch, key):
        rows = batch["completion_mask"].shape[0]
        size = rows // rl.minibatches
        all_metrics = []
        for epoch in range(rl.epochs):
            order = jax.random.permutation(jax.random.fold_in(key, epoch), rows) if rl.minibatches > 1 else jnp.arange(rows)
            for mb in range(rl.minibatches):
                minibatch = _rows(batch, order[mb * size:(mb + 1) * size])
                grads, metrics = grads_of_minibatch(state.params, minibatch)
                state, update_metrics = apply_gradients(state, grads, optimizer, metrics["loss"])
                all_metrics.append({**metrics, **update_metrics})
        return state, jax.tree.map(lambda *xs: jnp.mean(jnp.stack(xs)), *all_metrics)

    return update


def make_scorer(graphdef, rl, method):
    """Jitted `score(state, batch, reference_bytes, key) -> (train batch, rewards, metrics)`.

    Rewards come from `method.reward_fn` (host verifiers via pure_callback, or JAX ops on the
    sampler's statistics); `method.select_rows` picks the rows to train on; log-probs under the
    current params are recomputed only when the update takes more than one optimizer step.
    """
    multi_step = rl.epochs * rl.minibatches > 1

    @jax.jit
    def score(state, batch, reference_bytes, key):
        rewards = method.reward_fn(batch, reference_bytes)
        mask = batch["completion_mask"].astype(jnp.float32)
        batch = {k: batch[k] for k in ("prompt_tokens", "prompt_mask", "completion_tokens", "completion_mask")}
        args = (batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], batch["completion_mask"], rl.temperature)
        if multi_step or rl.algorithm == "reinforce_pp":
            batch["old_logp"] = jax.lax.stop_gradient(completion_logprobs(nnx.merge(graphdef, state.params), *args)[0])
        if state.ref_params is not None:
            batch["ref_logp"] = jax.lax.stop_gradient(completion_logprobs(nnx.merge(graphdef, state.ref_params), *args)[0])
        batch["advantages"] = compute_advantages(rl, rewards["reward"], mask, batch.get("old_logp"), batch.get("ref_logp"))
        metrics = {f"reward/{k}": jnp.mean(v) for k, v in rewards.items() if k != "verifier_failures"}
        if "verifier_failures" in rewards:
            metrics.update({f"verifier_failures/{name}": rewards["verifier_failures"][i] for i, name in enumerate(FAILURE_REASONS)})
        return method.select_rows(batch, rewards, key), rewards, metrics

    return score
