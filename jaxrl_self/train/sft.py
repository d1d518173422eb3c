"""Supervised fine-tuning on (prompt, completion) pairs: token-mean NLL over completion tokens.

Used for the warm start of the default job and as the M-step of STaR / ReST-EM.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_self.algorithms.aggregation import aggregate
from jaxrl_self.models.tokenizer import pad_batch
from jaxrl_self.parallel.rules import activation_mesh
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.state import apply_gradients


def encode_pairs(tokenizer, prompts: Sequence[str], completions: Sequence[str], prompt_len: int, completion_len: int):
    """Prompts left-padded to `[N, prompt_len]`, completions (+ EOS) right-padded to `[N, completion_len]`."""
    prompt_tokens, prompt_mask = encode_prompts(tokenizer, prompts, prompt_len)
    completion_ids = [tokenizer.encode(c) + [tokenizer.eos_id] for c in completions]
    completion_tokens, completion_mask = pad_batch(completion_ids, completion_len, tokenizer.pad_id, side="right")
    return {"prompt_tokens": prompt_tokens, "prompt_mask": prompt_mask,
            "completion_tokens": completion_tokens, "completion_mask": completion_mask}


def encode_prompts(tokenizer, prompts: Sequence[str], prompt_len: int):
    """BOS + prompt, left-padded: `[N, prompt_len] int32` and `[N, prompt_len] bool`.

    No BOS is added to a prompt that already starts with it (a chat template that writes it).
    """
    bos = [] if tokenizer.bos_id is None else [tokenizer.bos_id]
    encoded = [tokenizer.encode(p) for p in prompts]
    return pad_batch([ids if ids[:1] == bos else bos + ids for ids in encoded], prompt_len, tokenizer.pad_id, side="left")


def sft_loss(model, batch):
    """Token-mean negative log-likelihood of the completion tokens (and its metrics)."""
    logp, _ = completion_logprobs(model, batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], batch["completion_mask"])
    mask = batch["completion_mask"].astype(jnp.float32)
    loss = aggregate(-logp, mask, "token_mean")
    return loss, {"sft/loss": loss}


def make_sft_step(graphdef, optimizer, mesh=None):
    """Jitted `step(state, batch) -> (state, metrics)` over a batch from `encode_pairs`. mesh: the
    mesh activations are constrained to (`parallel.activation_mesh`). The state is not donated:
    the recipes start several SFT phases from the same initial params. The gradient has the
    params' dtype (bf16 with `model.param_dtype = "bfloat16"`: the optimizer's float32 master
    weights take it in float32)."""

    @jax.jit
    def step(state, batch):
        def loss_fn(params):
            return sft_loss(nnx.merge(graphdef, params), batch)

        with activation_mesh(mesh):
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state, update_metrics = apply_gradients(state, grads, optimizer, loss)
        return state, {**metrics, **update_metrics}

    return step


def sft_batch(tokenizer, examples, prompt_len: int, completion_len: int):
    """An SFT batch from `Example`s that carry a worked `solution`."""
    missing = [e.uid for e in examples if not e.solution]
    if missing:
        raise ValueError(f"examples {missing[:5]} have no solution to fine-tune on")
    batch = encode_pairs(tokenizer, [e.prompt for e in examples], [e.solution for e in examples], prompt_len, completion_len)
    return {k: np.asarray(v) for k, v in batch.items()}
