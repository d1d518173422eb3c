"""Supervised fine-tuning on (prompt, completion) pairs: token-mean NLL over completion tokens.

Used for the warm start of the default job and as the M-step of STaR / ReST-EM.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_self.algorithms.aggregation import aggregate
from jaxrl_self.models.lora import split_adapters
from jaxrl_self.parallel.rules import activation_mesh
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.state import apply_gradients, step_dropout_key


def sft_loss(model, batch, dropout_key=None):
    """Token-mean negative log-likelihood of the completion tokens (and its metrics); dropout_key:
    the LoRA adapters' dropout key of this training forward, or None."""
    logp, _ = completion_logprobs(model, batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], batch["completion_mask"],
                                  dropout_key=dropout_key)
    mask = batch["completion_mask"].astype(jnp.float32)
    loss = aggregate(-logp, mask, "token_mean")
    return loss, {"sft/loss": loss}


def make_sft_step(graphdef, optimizer, mesh=None):
    """Jitted `step(state, batch) -> (state, metrics)` over a batch from `tasks.encoding.encode_pairs`. mesh: the
    mesh activations are constrained to (`parallel.activation_mesh`). The state is not donated:
    the recipes start several SFT phases from the same initial params. The gradient has the
    params' dtype (bf16 with `model.param_dtype = "bfloat16"`: the optimizer's float32 master
    weights take it in float32). LoRA adapter dropout (docs/lora.md#adapter-dropout) draws from the
    run's `state.key` folded with `state.step`: a fresh key per optimizer step."""

    @jax.jit
    def step(state, batch):
        trainable, frozen = split_adapters(state.params)  # a LoRA model trains its adapters only

        def loss_fn(params):
            model = nnx.merge(graphdef, frozen, params)
            return sft_loss(model, batch, step_dropout_key(state, model.config.lora))

        with activation_mesh(mesh):
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        state, update_metrics = apply_gradients(state, grads, optimizer, loss)
        return state, {**metrics, **update_metrics}

    return step
