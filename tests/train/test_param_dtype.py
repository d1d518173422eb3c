"""`model.param_dtype = "bfloat16"`: the train state's matrices in bf16, float32 master weights in
the optimizer state (`train.state.with_master_weights`), float32 gradient accumulation; through the
real RL update, SFT and DPO steps, the non-finite guard, checkpoints and the config."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from test_rl_step import B, VOCAB, rl_config, rollout

from jaxrl_self import cli
from jaxrl_self.checkpoint import Checkpointer, CheckpointError
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.parallel import make_mesh, state_shardings
from jaxrl_self.train.dpo import make_dpo_step
from jaxrl_self.train.loop import fresh_state
from recipe_helpers import built
from jaxrl_self.train.rl_step import make_batch_builder, make_rl_update, policy_loss
from jaxrl_self.train.sft import make_sft_step
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer, with_master_weights
from jaxrl_self.train.value_head import init_value_head, trainable

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
LR = 1e-2
HIDDEN = 16
BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)


def dtypes(tree) -> list:
    return [x.dtype for x in jax.tree.leaves(tree)]


def matrices_in(tree, dtype) -> bool:
    """Every floating leaf of rank >= 2 is `dtype`, every other one float32 (`cast_matrices`)."""
    return all(x.dtype == (dtype if x.ndim >= 2 else F32) for x in jax.tree.leaves(tree))


def rounded(master, params):
    """The master in the params' dtypes: what the params must equal after every step."""
    return jax.tree.map(lambda m, p: np.asarray(m.astype(p.dtype)), master, params)


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(a), jax.device_get(b))


@pytest.fixture(scope="module")
def setup():
    """Float32 params of a tiny model; PPO (a float32 value head trained with the bf16 matrices, a
    reference) with 2 micro-batches and weight decay (which reads the params); the bf16-params
    optimizer; a train batch; the jitted update (it donates its state: each test builds its own)."""
    config = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                         intermediate_size=32, max_position_embeddings=32)
    graphdef, params = init_model(config, seed=0)
    rl = rl_config("ppo", micro_batches=2, weight_decay=0.1)
    optimizer = make_optimizer(LR, 10, weight_decay=rl.weight_decay, param_dtype="bfloat16")
    new_state = lambda: init_train_state(params, optimizer, 0, with_reference=True, value_params=init_value_head(HIDDEN),
                                         param_dtype="bfloat16")
    batch, rewards = rollout()
    train_batch, _ = make_batch_builder(graphdef, rl, RewardMethod())(new_state(), batch, rewards, jnp.ones(B, bool),
                                                                      jax.random.key(0))
    return graphdef, params, rl, optimizer, new_state, train_batch, make_rl_update(graphdef, optimizer, rl)


def micro_batch_carries(update, state, batch) -> list:
    """The carries (avals) of the `lax.scan`s in `update`'s program whose carry has one array per
    trained parameter: the micro-batch gradient accumulation."""
    shapes = [x.shape for x in jax.tree.leaves(trainable(state))]

    def scans(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                first = eqn.params["num_consts"]
                yield [v.aval for v in eqn.invars[first:first + eqn.params["num_carry"]]]
        for sub in jex_core.subjaxprs(jaxpr):
            yield from scans(sub)

    jaxpr = jax.make_jaxpr(update)(state, batch, jax.random.key(0)).jaxpr
    return [carry for carry in scans(jaxpr) if [a.shape for a in carry] == shapes]


def test_rl_update_steps_the_float32_master_as_a_float32_optimizer_would(setup):
    """One bf16-params RL update against AdamW run on float32 params from the same float32 start
    with the same gradient. The gradient is recomputed here (each micro-batch's gradient is taken
    w.r.t. the bf16 params, so it is bf16, and summed in float32): another XLA program may round a
    float32 micro-batch gradient's element to the neighbouring bf16 value (2^-8 relative), which
    moves Adam's first step lr * g / (|g| + eps) by at most lr * 2^-8. Everything else is the same
    float32 arithmetic (other fusions: a few float32 ulps), so atol = LR * 2^-8 (~0.4% of a step;
    measured: 3e-8). `test_master_takes_the_float32_optimizers_step_exactly` checks the step itself
    bit for bit."""
    graphdef, params, rl, optimizer, new_state, train_batch, update = setup
    start = {"policy": params, "value_head": init_value_head(HIDDEN)}
    state = new_state()
    assert matrices_in(state.params, BF16) and matrices_in(state.ref_params, BF16)
    assert set(dtypes(state.opt_state)) <= {F32, jnp.dtype(jnp.int32)}
    assert_trees_equal(state.opt_state.master, start)  # the master starts from the unrounded params
    carries = micro_batch_carries(update, state, train_batch)
    assert len(carries) == 1 and all(a.dtype == F32 for a in carries[0])
    stored = jax.device_get(trainable(state))  # the update donates `state`
    new, metrics = update(state, train_batch, jax.random.key(0))
    assert float(metrics["skipped_nonfinite"]) == 0.0 and int(new.step) == 1
    assert matrices_in(new.params, BF16) and set(dtypes(new.opt_state.master)) == {F32}
    assert_trees_equal(trainable(new), rounded(new.opt_state.master, trainable(new)))

    def grads_of(trained):
        mask = train_batch.completion_mask.astype(jnp.float32)
        denominators = (jnp.sum(jnp.any(mask > 0, axis=-1).astype(jnp.float32)), jnp.sum(mask))
        halves = [jax.tree.map(lambda x: x[i * x.shape[0] // 2:(i + 1) * x.shape[0] // 2], train_batch) for i in (0, 1)]
        loss = lambda t, half: policy_loss(nnx.merge(graphdef, t["policy"]), half, rl, *denominators, t["value_head"])[0]
        grad = lambda half: jax.grad(loss)(trained, half)
        return jax.tree.map(lambda a, b: a.astype(jnp.float32) + b.astype(jnp.float32), grad(halves[0]), grad(halves[1]))

    grads = jax.jit(grads_of)(stored)
    plain = make_optimizer(LR, 10, weight_decay=rl.weight_decay)
    expected = optax.apply_updates(start, plain.update(grads, plain.init(start), start)[0])
    moved = jax.tree.map(lambda m, p: np.max(np.abs(np.asarray(m) - np.asarray(p))), new.opt_state.master, start)
    assert min(jax.tree.leaves(moved)) > 0.5 * LR  # every tensor took a real step
    jax.tree.map(lambda m, e: np.testing.assert_allclose(m, e, rtol=0, atol=LR * 2 ** -8), jax.device_get(new.opt_state.master),
                 jax.device_get(expected))


def test_master_takes_the_float32_optimizers_step_exactly():
    """With the same float32 start and gradient, the master is what AdamW on float32 params gives,
    bit for bit (weight decay reads the master, not the rounded params)."""
    rng = np.random.default_rng(1)
    start = {"matrix": jnp.asarray(rng.normal(size=(8, 16)), jnp.float32), "scale": jnp.ones(16)}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), start)
    plain = make_optimizer(LR, 10, weight_decay=0.5)
    wrapped = make_optimizer(LR, 10, weight_decay=0.5, param_dtype="bfloat16")
    _, state = wrapped.update(grads, wrapped.init(start), {**start, "matrix": start["matrix"].astype(jnp.bfloat16)})
    assert_trees_equal(state.master, optax.apply_updates(start, plain.update(grads, plain.init(start), start)[0]))


def test_apply_updates_gives_the_rounded_master_exactly():
    """`optax.apply_updates(params, updates)` adds in float32 and casts to each param's dtype: the
    result is the new master in that dtype bit for bit, for a bf16 entry that grows, shrinks (down
    to 2^-16 of its magnitude), crosses zero or reaches it, and for a float32 leaf (equal to its
    master). An entry shrinking further cannot be reached by a float32 sum; it lands within 2^-23
    of its old magnitude."""
    rng = np.random.default_rng(0)
    ratios = jnp.asarray([3e5, 1.001, -0.7, 2.0 ** -15.9, -(2.0 ** -15.9), 0.0, 2.0 ** -20])  # new master / old param
    old = jnp.asarray(rng.normal(size=(len(ratios), 4096)) * np.exp(rng.uniform(-12, 12, (len(ratios), 4096))), jnp.bfloat16)
    scale = jnp.asarray(rng.normal(size=64), jnp.float32)
    params = {"matrix": old, "scale": scale}
    # the identity optimizer from a zero master: the new master is the gradient, any value we like
    optimizer = with_master_weights(optax.identity())
    state = optimizer.init({"matrix": jnp.zeros(old.shape), "scale": scale})
    updates, state = optimizer.update({"matrix": old.astype(jnp.float32) * ratios[:, None], "scale": -0.3 * scale}, state, params)
    assert set(dtypes(updates)) == {F32} and set(dtypes(state.master)) == {F32}
    applied, wanted = jax.device_get((optax.apply_updates(params, updates), rounded(state.master, params)))
    np.testing.assert_array_equal(applied["scale"], wanted["scale"])
    np.testing.assert_array_equal(applied["matrix"][:-1], wanted["matrix"][:-1])
    far, target = applied["matrix"][-1].astype(np.float32), wanted["matrix"][-1].astype(np.float32)
    assert np.any(far != target) and np.all(np.abs(far - target) <= 2.0 ** -23 * np.abs(old[-1].astype(np.float32)))


def test_non_finite_loss_keeps_params_master_and_optimizer_state(setup):
    _, _, _, _, new_state, train_batch, update = setup
    state = new_state()
    before = jax.device_get(state)
    new, metrics = update(state, train_batch.replace(advantages=train_batch.advantages * jnp.nan), jax.random.key(0))
    assert float(metrics["skipped_nonfinite"]) == 1.0
    assert_trees_equal((trainable(new), new.opt_state, new.step), (trainable(before), before.opt_state, before.step))
    assert matrices_in(new.params, BF16)


def test_sft_and_dpo_steps_with_bf16_params(setup):
    graphdef, params, _, optimizer, _, train_batch, _ = setup
    sft_batch = {k: getattr(train_batch, k)[:4] for k in ("prompt_tokens", "prompt_mask", "completion_tokens", "completion_mask")}
    state, metrics = make_sft_step(graphdef, optimizer)(init_train_state(params, optimizer, 0, False, param_dtype="bfloat16"),
                                                        sft_batch)
    assert float(metrics["skipped_nonfinite"]) == 0.0 and np.isfinite(float(metrics["grad_norm"]))
    assert matrices_in(state.params, BF16) and set(dtypes(state.opt_state.master)) == {F32}
    assert_trees_equal(state.params, rounded(state.opt_state.master, state.params))

    pairs = {"prompt_tokens": sft_batch["prompt_tokens"], "prompt_mask": sft_batch["prompt_mask"],
             "chosen_tokens": sft_batch["completion_tokens"], "chosen_mask": sft_batch["completion_mask"],
             "rejected_tokens": (sft_batch["completion_tokens"] + 1) % VOCAB, "rejected_mask": sft_batch["completion_mask"]}
    state = init_train_state(params, optimizer, 0, with_reference=True, param_dtype="bfloat16")
    state, metrics = make_dpo_step(graphdef, optimizer, beta=0.5)(state, pairs)
    assert float(metrics["dpo/loss"]) == pytest.approx(np.log(2), rel=1e-6)  # the bf16 reference is the bf16 policy
    assert matrices_in(state.params, BF16) and matrices_in(state.ref_params, BF16)
    assert_trees_equal(state.params, rounded(state.opt_state.master, state.params))


def test_checkpoint_restores_bf16_params_and_float32_master(setup, tmp_path):
    _, params, _, _, new_state, _, _ = setup
    state = new_state()
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(1, state, {"phase": "rl"})
    ckpt.close()
    step, restored, _ = Checkpointer(tmp_path / "checkpoints").restore_latest(lambda meta: new_state())
    assert step == 1 and dtypes(restored) == dtypes(state)
    assert_trees_equal(restored, state)
    plain = make_optimizer(LR, 10)  # a float32 run cannot resume it: the error names a tensor
    with pytest.raises(CheckpointError, match="tensor"):
        Checkpointer(tmp_path / "checkpoints").restore_latest(lambda meta: init_train_state(params, plain, 0, True))


def test_master_is_sharded_like_the_params(setup):
    """The master mirrors the params' Variables (logical axes included): FSDP shards it like them."""
    mesh = make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=8, tensor=1)))
    shardings = state_shardings(setup[4](), mesh)
    specs = lambda tree: [s.spec for s in jax.tree.leaves(tree)]
    assert specs(shardings.opt_state.master["policy"]) == specs(shardings.params)
    assert any(spec != P() for spec in specs(shardings.opt_state.master["policy"]))


def test_run_builds_bf16_states_for_both_phases(tiny_config, tmp_path):
    """The run context carries `model.param_dtype` into both optimizers and both phases' states."""
    config = tiny_config()
    config.model.param_dtype = "bfloat16"
    recipe, ctx = built(config)
    for phase in ("sft", "rl"):
        state = fresh_state(ctx, recipe, phase)
        assert matrices_in(state.params, BF16) and set(dtypes(state.opt_state.master)) == {F32}, phase
    assert matrices_in(state.ref_params, BF16)


def test_param_dtype_is_validated_before_anything_runs(setup, capsys, tmp_path):
    argv = ["train", "--config", str(CONFIGS / "default.py"), "--workdir", str(tmp_path / "run"),
            "--config.model.param_dtype=float16"]
    assert cli.main(argv) == 2
    assert "config.model.param_dtype: must be 'float32' or 'bfloat16', got 'float16'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="master weights"):  # a bf16 state needs the wrapped optimizer
        init_train_state(setup[1], make_optimizer(LR, 10), 0, False, param_dtype="bfloat16")
