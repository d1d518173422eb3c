"""The train state pytree and the optimizer: everything a checkpoint must hold about the learner."""
from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.transformer import Transformer, cast_matrices


@flax.struct.dataclass
class TrainState:
    """params/ref_params: `nnx.State` of the model (ref_params None when no reference is used);
    opt_state: optax state; step: int32 scalar (optimizer steps taken in this phase);
    key: `[2] uint32` raw PRNG key of the run; value_params: PPO's value head
    (`train.value_head`), None otherwise — the optimizer then covers
    `{"policy": params, "value_head": value_params}`."""

    params: Any
    opt_state: Any
    ref_params: Optional[Any]
    step: jnp.ndarray
    key: jnp.ndarray
    value_params: Optional[Any] = None


def make_optimizer(learning_rate: float, total_steps: int, warmup_steps: int = 0, weight_decay: float = 0.0,
                   max_grad_norm: float = 1.0, moments_dtype: Optional[str] = None) -> optax.GradientTransformation:
    """AdamW with linear warmup + cosine decay to 10% and global-norm clipping.

    moments_dtype: dtype of Adam's first moment ("float32", or "bfloat16": 2 bytes per parameter
    instead of 4); None keeps the parameters' dtype. The second moment stays in the parameters' dtype.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup_steps else learning_rate, peak_value=learning_rate,
        warmup_steps=warmup_steps, decay_steps=max(total_steps, warmup_steps + 1), end_value=0.1 * learning_rate)
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adamw(schedule, weight_decay=weight_decay,
                                                                           mu_dtype=moments_dtype))


def init_model(config: ModelConfig, seed: int):
    """(graphdef, params) of a freshly initialised model."""
    return nnx.split(Transformer(config, rngs=nnx.Rngs(seed)))


def init_train_state(params, optimizer: optax.GradientTransformation, seed: int, with_reference: bool,
                     value_params=None, reference_dtype=jnp.float32) -> TrainState:
    """The phase's first state; the frozen reference (when `with_reference`) holds its matrices in
    `reference_dtype` — the compute dtype, so reference log-probs are unchanged (`cast_matrices`)."""
    trainable = params if value_params is None else {"policy": params, "value_head": value_params}
    return TrainState(
        params=params,
        opt_state=optimizer.init(trainable),
        ref_params=cast_matrices(params, reference_dtype) if with_reference else None,
        step=jnp.int32(0),
        key=jax.random.key_data(jax.random.key(seed)),
        value_params=value_params,
    )


def apply_gradients(state: TrainState, grads, optimizer: optax.GradientTransformation, loss):
    """One optimizer step, skipped when the loss or any gradient is not finite (NaN/Inf guard).

    Returns (new_state, metrics) with metrics["grad_norm"] and metrics["skipped_nonfinite"] (0/1).
    """
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    updates, new_opt_state = optimizer.update(safe_grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    keep_old = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    state = state.replace(params=keep_old(new_params, state.params), opt_state=keep_old(new_opt_state, state.opt_state),
                          step=state.step + finite.astype(jnp.int32))
    return state, {"grad_norm": grad_norm, "skipped_nonfinite": 1.0 - finite.astype(jnp.float32)}
