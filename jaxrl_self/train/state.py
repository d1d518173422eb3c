"""The train state pytree and the optimizer: everything a checkpoint must hold about the learner."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.lora import dropout_key, join_adapters, split_adapters
from jaxrl_self.models.transformer import Transformer, cast_matrices


@flax.struct.dataclass
class TrainState:
    """params/ref_params: `nnx.State` of the model (ref_params None when no reference is used);
    params hold their matrices in `model.param_dtype` (float32, or bfloat16 with float32 master
    weights in opt_state, `with_master_weights`); opt_state: optax state; step: int32 scalar
    (optimizer steps taken in this phase);
    key: `[2] uint32` raw PRNG key of the run; value_params: PPO's value head
    (`train.value_head`), None otherwise — the optimizer then covers
    `{"policy": params, "value_head": value_params}`.

    A LoRA model (`ModelConfig.lora`, docs/lora.md): params hold the frozen base and the adapters,
    the optimizer covers the adapters only (`split_adapters`), and ref_params is a copy of the
    adapters at the phase's start (the reference is the same base with them: no second base)."""

    params: Any
    opt_state: Any
    ref_params: Optional[Any]
    step: jnp.ndarray
    key: jnp.ndarray
    value_params: Optional[Any] = None


class MasterWeightsState(NamedTuple):
    """State of `with_master_weights`: `master`, a float32 copy of the params (the same tree of
    Variables, so it is sharded like them), and `inner`, the wrapped optimizer's state over it."""

    master: Any
    inner: Any


def with_master_weights(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` run on float32 master weights, for params stored in a narrower dtype (bfloat16).

    init(params): the master is a float32 copy of `params` (a copy also of float32 leaves: a
      train state must not hold one buffer twice, the update donates it) — pass the params before
      they are rounded to their storage dtype, so that the master starts exact.
    update(grads, state, params): grads of any float dtype are cast to float32; `inner` updates
      the master with the master as its params (AdamW's weight decay reads them); the master
      advances by `inner`'s updates. The returned updates are float32, and
      `optax.apply_updates(params, updates)` (which adds in float32, then casts to each param's
      dtype) gives `new_master.astype(param.dtype)` exactly: for a float32 leaf, which equals its
      master, they are `inner`'s updates; for a narrower leaf, the float32 difference between its
      rounded new master and the param. That difference of two bfloat16 numbers is exact in float32
      unless an entry shrinks, in one step, to a nonzero value below 2^-16 of its old magnitude: no
      float32 sum `param + u` reaches such a value, and the param then differs from it by less than
      2^-23 of the old magnitude (the next step starts from the master again).
    """

    def init(params):
        master = jax.tree.map(lambda p: jnp.array(p, dtype=jnp.float32, copy=True), params)
        return MasterWeightsState(master=master, inner=inner.init(master))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("with_master_weights needs the params in update(): the updates take them to the new master")
        grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        updates, inner_state = inner.update(grads, state.inner, state.master)
        master = optax.apply_updates(state.master, updates)
        return jax.tree.map(_to_master, master, params, updates), MasterWeightsState(master=master, inner=inner_state)

    return optax.GradientTransformation(init, update)


def _to_master(master, param, update):
    """The float32 update taking `param` to `master` in the param's dtype (`with_master_weights`)."""
    if param.dtype == master.dtype:
        return update
    return master.astype(param.dtype).astype(jnp.float32) - param.astype(jnp.float32)


LR_SCHEDULES = ("cosine", "constant")  # after the linear warmup
NO_UPDATES = optax.set_to_zero()  # the optimizer of a state no step updates (between the iterative recipes' rounds)


def make_optimizer(learning_rate: float, total_steps: int, warmup_steps: int = 0, weight_decay: float = 0.0,
                   max_grad_norm: float = 1.0, moments_dtype: Optional[str] = None,
                   param_dtype: str = "float32", schedule: str = "cosine") -> optax.GradientTransformation:
    """AdamW with a linear warmup, then the learning-rate `schedule`, and global-norm clipping.

    schedule: "cosine" decays to 10% at `total_steps`; "constant" stays at `learning_rate`, so the
    first n updates do not depend on `total_steps` (a run extended to more steps equals a run
    started with them: docs/runs.md).

    moments_dtype: dtype of Adam's first moment ("float32", or "bfloat16": 2 bytes per parameter
    instead of 4); None keeps the parameters' dtype. The second moment stays in the parameters' dtype.
    param_dtype: the dtype the train state stores matrices in (`init_train_state`); "bfloat16"
    wraps the optimizer in `with_master_weights`, so Adam's parameters (and its moments with
    moments_dtype None) are the float32 master.
    """
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"learning-rate schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    start = 0.0 if warmup_steps else learning_rate
    if schedule == "cosine":
        rate = optax.warmup_cosine_decay_schedule(
            init_value=start, peak_value=learning_rate, warmup_steps=warmup_steps,
            decay_steps=max(total_steps, warmup_steps + 1), end_value=0.1 * learning_rate)
    else:
        rate = optax.join_schedules([optax.linear_schedule(start, learning_rate, warmup_steps),
                                     optax.constant_schedule(learning_rate)], boundaries=[warmup_steps])
    optimizer = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adamw(rate, weight_decay=weight_decay,
                                                                                mu_dtype=moments_dtype))
    return optimizer if jnp.dtype(param_dtype) == jnp.float32 else with_master_weights(optimizer)


def init_model(config: ModelConfig, seed: int):
    """(graphdef, params) of a freshly initialised model."""
    return nnx.split(Transformer(config, rngs=nnx.Rngs(seed)))


def init_train_state(params, optimizer: optax.GradientTransformation, seed: int, with_reference: bool,
                     value_params=None, reference_dtype=jnp.float32, param_dtype="float32") -> TrainState:
    """The phase's first state.

    params: the model params, float32 (or already in param_dtype: the previous phase's); the state
      stores their matrices (floating, rank >= 2, `cast_matrices`) in `param_dtype`. A param_dtype
      other than float32 needs an optimizer from `make_optimizer(..., param_dtype)`: its master
      weights are initialised from `params` before the rounding (or `NO_UPDATES`: nothing to round).
    reference_dtype: the dtype of the frozen reference's matrices (when `with_reference`), the
      compute dtype, so reference log-probs are unchanged (`cast_matrices`); with narrower params
      the reference is a copy of them in param_dtype (the layers cast matrices to the compute
      dtype where they use them, so a wider copy would compute the same log-probs).
    A LoRA model's params train only their adapters (float32, plain `optimizer`): param_dtype is
      then the storage of the frozen base's matrices, and the reference is a copy of the adapters.
    """
    policy, frozen = split_adapters(params)
    trainable = policy if value_params is None else {"policy": policy, "value_head": value_params}
    opt_state = optimizer.init(trainable)
    if len(frozen):  # LoRA: a frozen base in param_dtype, float32 adapters
        params = join_adapters(cast_matrices(frozen, param_dtype), policy)
        reference = jax.tree.map(lambda p: jnp.array(p, copy=True), policy)
    else:
        if jnp.dtype(param_dtype) != jnp.float32:
            if not isinstance(opt_state, MasterWeightsState) and optimizer is not NO_UPDATES:
                raise ValueError(f"params stored in {param_dtype} need an optimizer with float32 master weights: "
                                 "make_optimizer(..., param_dtype=...) or with_master_weights(optimizer)")
            params, reference_dtype = cast_matrices(params, param_dtype), param_dtype
        reference = cast_matrices(params, reference_dtype)
    return TrainState(
        params=params,
        opt_state=opt_state,
        ref_params=reference if with_reference else None,
        step=jnp.int32(0),
        key=jax.random.key_data(jax.random.key(seed)),
        value_params=value_params,
    )


def step_dropout_key(state: TrainState, lora_config):
    """The LoRA adapters' dropout key of a learner's step on `state` (SFT, DPO; docs/lora.md#adapter-dropout):
    the run's key folded with the optimizer step, a fresh one per step; None without dropout."""
    return dropout_key(lora_config, jax.random.wrap_key_data(state.key), state.step)


def apply_gradients(state: TrainState, grads, optimizer: optax.GradientTransformation, loss):
    """One optimizer step, skipped when the loss or any gradient is not finite (NaN/Inf guard).

    grads: the tree of `state.params`' trainable part (`split_adapters`: all of them, or a LoRA
    model's adapters), float32 or the params' dtype; the norm is taken in float32.
    Returns (new_state, metrics) with metrics["grad_norm"] and metrics["skipped_nonfinite"] (0/1);
    a skipped step keeps params and optimizer state (master weights included) as they were.
    """
    grad_norm = optax.global_norm(jax.tree.map(lambda g: g.astype(jnp.float32), grads))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    safe_grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
    params, frozen = split_adapters(state.params)
    updates, new_opt_state = optimizer.update(safe_grads, state.opt_state, params)
    new_params = optax.apply_updates(params, updates)
    keep_old = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    state = state.replace(params=join_adapters(frozen, keep_old(new_params, params)),
                          opt_state=keep_old(new_opt_state, state.opt_state), step=state.step + finite.astype(jnp.int32))
    return state, {"grad_norm": grad_norm, "skipped_nonfinite": 1.0 - finite.astype(jnp.float32)}


def checkpointed_part(state: TrainState) -> TrainState:
    """What a checkpoint holds of `state`: all of it, except a LoRA model's frozen base (its params
    are then the adapters), which a run reads again from `model.init_from` (docs/lora.md)."""
    adapters, frozen = split_adapters(state.params)
    return state.replace(params=adapters) if len(frozen) else state


def with_frozen_base(restored: TrainState, fresh: TrainState) -> TrainState:
    """A state restored from `checkpointed_part` with the frozen base of `fresh` (the phase's fresh state)."""
    frozen = split_adapters(fresh.params)[1]
    return restored.replace(params=join_adapters(frozen, restored.params)) if len(frozen) else restored


CHECKPOINTED_PART = (checkpointed_part, with_frozen_base)  # `checkpoint.Checkpointer(part=...)`
