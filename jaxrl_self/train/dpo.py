"""Preference updates (DPO and SPIN, docs/algorithms.md#dpo-and-spin-losses): a jitted step over (prompt, chosen,
rejected) triples, shared by SPIN and self-rewarding.

Sequence log-probs are sums over completion tokens (incl. EOS). The reference is
`state.ref_params`, frozen for the whole phase (SPIN and self-rewarding use the previous iterate);
its log-probs are computed inside the step under `stop_gradient`.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_self.algorithms.aggregation import masked_mean
from jaxrl_self.algorithms.losses import dpo_loss, sequence_logprob
from jaxrl_self.parallel.rules import activation_mesh
from jaxrl_self.models.lora import split_adapters
from jaxrl_self.tasks.encoding import encode_pairs
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.state import apply_gradients, step_dropout_key


def encode_preference_pairs(tokenizer, prompts: Sequence[str], chosen: Sequence[str], rejected: Sequence[str], prompt_len: int,
                            completion_len: int) -> dict[str, np.ndarray]:
    """Prompts left-padded to `[N, prompt_len]`; chosen/rejected completions (+ EOS) right-padded to
    `[N, completion_len]`: keys prompt_tokens/prompt_mask, chosen_tokens/chosen_mask,
    rejected_tokens/rejected_mask."""
    won = encode_pairs(tokenizer, prompts, chosen, prompt_len, completion_len)
    lost = encode_pairs(tokenizer, prompts, rejected, prompt_len, completion_len)
    batch = {"prompt_tokens": won["prompt_tokens"], "prompt_mask": won["prompt_mask"],
             "chosen_tokens": won["completion_tokens"], "chosen_mask": won["completion_mask"],
             "rejected_tokens": lost["completion_tokens"], "rejected_mask": lost["completion_mask"]}
    return {k: np.asarray(v) for k, v in batch.items()}


def pair_logprobs(model, batch, dropout_key=None):
    """Sequence log-prob sums `([N], [N]) float32` of the chosen and rejected completions, from one
    forward pass over the `[2N, P + T]` stacked rows; dropout_key: the LoRA adapters' dropout key
    of the policy's training forward (None for the reference and for scoring)."""
    prompt_tokens = jnp.concatenate([batch["prompt_tokens"]] * 2)
    prompt_mask = jnp.concatenate([batch["prompt_mask"]] * 2)
    tokens = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]])
    mask = jnp.concatenate([batch["chosen_mask"], batch["rejected_mask"]])
    logp, _ = completion_logprobs(model, prompt_tokens, prompt_mask, tokens, mask, dropout_key=dropout_key)
    sums = sequence_logprob(logp, mask.astype(jnp.float32))
    n = batch["prompt_tokens"].shape[0]
    return sums[:n], sums[n:]


def make_pair_scorer(graphdef):
    """Jitted `score(params, batch) -> (chosen [N], rejected [N])` sequence log-prob sums."""
    return jax.jit(lambda params, batch: pair_logprobs(nnx.merge(graphdef, params), batch))


def make_dpo_step(graphdef, optimizer, beta: float, mesh=None):
    """Jitted `step(state, batch) -> (state, metrics)` minimising the DPO loss with reference
    `state.ref_params` (must be set). `batch` comes from `encode_preference_pairs`, optionally with
    `pair_mask [N] bool` for padding rows. Metrics (scalars): dpo/loss, dpo/reward_margin (mean u),
    dpo/accuracy, dpo/chosen_reward, dpo/rejected_reward, dpo/chosen_logp, dpo/rejected_logp
    (policy sequence log-probs before the update), grad_norm, skipped_nonfinite. The gradient has
    the params' dtype, as in `sft.make_sft_step`. mesh: the mesh activations are constrained to.
    LoRA adapter dropout applies to the policy's forward only, keyed as in `sft.make_sft_step`."""

    @jax.jit
    def step(state, batch):
        with activation_mesh(mesh):
            return _step(state, batch)

    def _step(state, batch):
        trainable, frozen = split_adapters(state.params)  # a LoRA model trains (and refers to) its adapters only
        ref_chosen, ref_rejected = jax.lax.stop_gradient(pair_logprobs(nnx.merge(graphdef, frozen, state.ref_params), batch))

        def loss_fn(params):
            model = nnx.merge(graphdef, frozen, params)
            chosen, rejected = pair_logprobs(model, batch, step_dropout_key(state, model.config.lora))
            pair_mask = batch.get("pair_mask", jnp.ones_like(chosen, bool))
            loss, metrics = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta, pair_mask=pair_mask)
            return loss, {"loss": loss, **metrics, "chosen_logp": masked_mean(chosen, pair_mask),
                          "rejected_logp": masked_mean(rejected, pair_mask)}

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        state, update_metrics = apply_gradients(state, grads, optimizer, loss)
        return state, {**{f"dpo/{k}": jax.lax.stop_gradient(v) for k, v in metrics.items()}, **update_metrics}

    return step
