"""The RL learner through its real functions on a tiny random model: gradient accumulation, the
on-policy gradient, padding invariance, group masking, PPO's value head, dynamic sampling and the
per-algorithm configs."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrl_self.config import ConfigError, build_config, load_config_file, validate
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.algorithms.aggregation import masked_mean
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.train.dynamic_sampling import collect_groups, make_group_merger
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.rl_step import (
    compute_advantages,
    make_batch_builder,
    make_reward_scorer,
    make_rl_update,
    needs_reference,
    policy_loss,
    refresh_reference,
)
from jaxrl_self.train.state import init_model, init_train_state
from jaxrl_self.train.value_head import init_value_head

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

ALGORITHMS = ("grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp", "ppo")
B, G, P, T, VOCAB = 2, 4, 4, 6, 12
N = B * G


def rl_config(algorithm, **overrides):
    rl = load_config_file(CONFIGS / "default.py").rl
    rl.algorithm = algorithm
    rl.update({"group_size": G, "prompts_per_step": B, "max_new_tokens": T, "kl_coef": 0.05, **overrides})
    return rl


@pytest.fixture(scope="module")
def model():
    config = ModelConfig(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                         intermediate_size=32, max_position_embeddings=32)
    graphdef, params = init_model(config, seed=0)
    return graphdef, params


def rollout(seed=0, extra_pad=0):
    """A rollout of B prompts x G completions with ragged lengths; `extra_pad` more padding columns."""
    rng = np.random.default_rng(seed)
    prompt_mask = np.ones((N, P), bool)
    prompt_mask[::3, :2] = False  # some left padding
    prompt_tokens = rng.integers(1, VOCAB, size=(N, P)) * prompt_mask
    lengths = rng.integers(1, T + 1, size=N)
    tokens = np.pad(rng.integers(1, VOCAB, size=(N, T)), ((0, 0), (0, extra_pad)))
    completion_mask = np.arange(T + extra_pad)[None, :] < lengths[:, None]
    rewards = np.asarray([1, 0, 0, 1, 0, 1, 1, 1], np.float32)
    return ({"prompt_tokens": jnp.asarray(prompt_tokens, jnp.int32),
             "prompt_mask": jnp.asarray(prompt_mask),
             "completion_tokens": jnp.asarray(np.where(completion_mask, tokens, 0), jnp.int32),
             "completion_mask": jnp.asarray(completion_mask)},
            {"reward": jnp.asarray(rewards)})


def start_state(params, rl, optimizer, value_seed=None):
    """A train state (with reference and value head as the algorithm needs); the reference and the
    value head are perturbed so that KL and values are not trivially zero."""
    value_params = None
    if rl.algorithm == "ppo":
        value_params = init_value_head(16)
        if value_seed is not None:
            value_params = {"kernel": jax.random.normal(jax.random.key(value_seed), (16,)) * 0.5, "bias": jnp.float32(0.1)}
    params = jax.tree.map(jnp.copy, params)  # the update donates its state: keep the fixture's params
    state = init_train_state(params, optimizer, 0, with_reference=needs_reference(rl), value_params=value_params)
    if state.ref_params is not None:
        noise = lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape)
        state = state.replace(ref_params=jax.tree.map(noise, state.ref_params))
    return state


def param_delta(new, old):
    return jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new, old)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_micro_batch_accumulation_matches_one_batch(model, algorithm):
    graphdef, params = model
    optimizer = optax.sgd(1.0)  # the parameter change is minus the gradient
    deltas = []
    for micro_batches in (1, 4):
        rl = rl_config(algorithm, micro_batches=micro_batches)
        state = start_state(params, rl, optimizer, value_seed=0)
        batch, rewards = rollout()
        train_batch, _ = make_batch_builder(graphdef, rl, RewardMethod())(state, batch, rewards, jnp.ones(B, bool), jax.random.key(0))
        before = jax.device_get((state.params, state.value_params))  # the update donates `state`
        new_state, metrics = make_rl_update(graphdef, optimizer, rl)(state, train_batch, jax.random.key(0))
        deltas.append((param_delta(new_state.params, before[0]), metrics))
        if algorithm == "ppo":
            deltas[-1] += (param_delta(new_state.value_params, before[1]),)
    (one, one_metrics, *one_value), (four, four_metrics, *four_value) = deltas
    assert max(float(np.max(np.abs(x))) for x in jax.tree.leaves(one)) > 1e-4  # a real gradient
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), one, four)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), one_value, four_value)
    for name in ("loss", "grad_norm", "ratio/mean", "ratio/min", "ratio/max", "entropy"):
        np.testing.assert_allclose(one_metrics[name], four_metrics[name], rtol=1e-4, atol=1e-6)


def test_epochs_and_minibatches_take_steps_on_old_logprobs(model):
    graphdef, params = model
    rl = rl_config("grpo", epochs=2, minibatches=2, learning_rate=1e-2)
    optimizer = optax.adam(1e-2)
    state = start_state(params, rl, optimizer)
    batch, rewards = rollout()
    train_batch, _ = make_batch_builder(graphdef, rl, RewardMethod())(state, batch, rewards, jnp.ones(B, bool), jax.random.key(0))
    assert train_batch.old_logp is not None
    new_state, metrics = make_rl_update(graphdef, optimizer, rl)(state, train_batch, jax.random.key(0))
    assert int(new_state.step) == 4
    assert float(metrics["ratio/max"]) > 1.0 or float(metrics["ratio/min"]) < 1.0  # later steps are off-policy
    for name in ("kl", "entropy", "clip_fraction/low", "clip_fraction/high", "grad_norm", "policy_loss"):
        assert np.isfinite(float(metrics[name])), name


@pytest.mark.parametrize("algorithm, weights", [
    ("grpo", "seq_mean_token_mean"), ("gspo", "seq_mean_token_mean"), ("dapo", "token_mean"), ("dr_grpo", "token_sum_norm"),
])
def test_on_policy_gradient_is_advantage_weighted_logprob_gradient(model, algorithm, weights):
    """ratio = 1: the clipped surrogate's gradient is -A grad logp with the aggregation's weights."""
    graphdef, params = model
    rl = rl_config(algorithm, kl_coef=0.0)
    batch, rewards = rollout()
    mask = batch["completion_mask"].astype(jnp.float32)
    advantages = compute_advantages(rl, rewards["reward"], mask)["advantages"]
    old_logp = completion_logprobs(nnx.merge(graphdef, params), batch["prompt_tokens"], batch["prompt_mask"],
                                   batch["completion_tokens"], batch["completion_mask"])[0]
    train_batch = RolloutBatch(**batch, advantages=advantages, old_logp=old_logp)

    def loss(p):
        return policy_loss(nnx.merge(graphdef, p), train_batch, rl, jnp.float32(N), jnp.sum(mask))[0]

    def reference(p):
        logp = completion_logprobs(nnx.merge(graphdef, p), batch["prompt_tokens"], batch["prompt_mask"],
                                   batch["completion_tokens"], batch["completion_mask"])[0]
        if weights == "seq_mean_token_mean":
            return -jnp.mean(advantages * masked_mean(logp, mask, axis=-1))
        if weights == "token_mean":
            return -jnp.sum(advantages[:, None] * logp * mask) / jnp.sum(mask)
        return -jnp.sum(advantages[:, None] * logp * mask) / (N * T)

    grads, expected = jax.jit(lambda p: (jax.grad(loss)(p), jax.grad(reference)(p)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), grads, expected)
    assert float(jnp.max(jnp.abs(advantages))) > 0.1


def test_per_token_kl_coefficients(model, monkeypatch):
    """`RolloutBatch.kl_coef` per token `[N, T]` (SPIRAL's method.decision_kl_coef): with zero
    advantages (the KL term alone) d loss / d logp[t] is exactly 0 where the coefficient is 0 and
    not where it is > 0; a constant `[N, T]` coefficient gives the loss and gradient of the
    per-row `[N]` form and of rl.kl_coef (dr_grpo's KL loss term)."""
    from jaxrl_self.train import rl_step

    graphdef, params = model
    rl = rl_config("dr_grpo")
    batch, _ = rollout()
    mask = np.asarray(batch["completion_mask"])
    policy = nnx.merge(graphdef, params)
    shared = rl_step.completion_logprobs
    ref_logp = jnp.asarray(np.random.default_rng(0).normal(-2.5, 0.5, size=(N, T)), jnp.float32)

    def perturbed_loss(delta, train_batch):
        def perturbed(*args, **kwargs):  # d loss / d delta[t] = d loss / d logp[t]
            logp, entropy = shared(*args, **kwargs)
            return logp + delta, entropy
        monkeypatch.setattr(rl_step, "completion_logprobs", perturbed)
        return policy_loss(policy, train_batch, rl, jnp.float32(N), jnp.float32(mask.sum()))[0]

    loss_and_grad = jax.jit(jax.value_and_grad(perturbed_loss))
    delta = jnp.zeros((N, T), jnp.float32)
    coef = np.where(np.arange(T)[None, :] % 2 == 0, 0.0, 0.1).repeat(N, axis=0).astype(np.float32)
    kl_only = RolloutBatch(**batch, advantages=jnp.zeros(N), ref_logp=ref_logp, kl_coef=jnp.asarray(coef))
    _, grad = loss_and_grad(delta, kl_only)
    grad = np.asarray(grad)
    assert np.all(grad[mask & (coef == 0)] == 0.0) and np.any(mask & (coef == 0))
    assert np.all(grad[mask & (coef > 0)] != 0.0) and np.any(mask & (coef > 0))

    advantages = jnp.asarray(np.linspace(-1.0, 1.0, N), jnp.float32)
    forms = [jnp.full((N, T), 0.05, jnp.float32), jnp.full((N,), 0.05, jnp.float32), None]
    results = [loss_and_grad(delta, RolloutBatch(**batch, advantages=advantages, ref_logp=ref_logp, kl_coef=form)) for form in forms]
    for loss, grad in results[1:]:
        np.testing.assert_allclose(loss, results[0][0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(grad, results[0][1], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_extra_padding_columns_change_no_loss_or_gradient(model, algorithm):
    graphdef, params = model
    rl = rl_config(algorithm)
    state = start_state(params, rl, optax.sgd(1.0), value_seed=0)
    build = make_batch_builder(graphdef, rl, RewardMethod())

    @jax.jit
    def loss_and_grads(state, batch, rewards):
        train_batch, _ = build(state, batch, rewards, jnp.ones(B, bool), jax.random.key(0))
        mask = train_batch.completion_mask.astype(jnp.float32)

        def loss(trainable):
            policy, value = trainable
            return policy_loss(nnx.merge(graphdef, policy), train_batch, rl, jnp.float32(N), jnp.sum(mask), value)[0]

        return jax.value_and_grad(loss)((state.params, state.value_params))

    loss, grads = loss_and_grads(state, *rollout())
    padded_loss, padded_grads = loss_and_grads(state, *rollout(extra_pad=3))
    np.testing.assert_allclose(loss, padded_loss, atol=1e-6, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), grads, padded_grads)


@pytest.mark.parametrize("algorithm", ["grpo", "dapo"])
def test_masked_groups_count_as_dropped(model, algorithm):
    """`group_valid` False zeroes a group's rows: loss and gradient equal those of the batch without it."""
    graphdef, params = model
    rl = rl_config(algorithm, kl_coef=0.0)
    state = start_state(params, rl, optax.sgd(1.0))
    batch, rewards = rollout()
    train_batch, metrics = make_batch_builder(graphdef, rl, RewardMethod())(state, batch, rewards, jnp.asarray([False, True]), jax.random.key(0))
    assert not np.any(np.asarray(train_batch.completion_mask[:G]))
    assert float(metrics["groups/with_signal"]) == 1.0

    def loss(p, rows):
        part = jax.tree.map(lambda x: x[rows], train_batch)
        mask = part.completion_mask.astype(jnp.float32)
        num_sequences = jnp.sum(jnp.any(mask > 0, axis=-1)).astype(jnp.float32)
        return policy_loss(nnx.merge(graphdef, p), part, rl, num_sequences, jnp.sum(mask))[0]

    masked, dropped = jax.jit(lambda p: (jax.value_and_grad(loss)(p, slice(0, N)), jax.value_and_grad(loss)(p, slice(G, N))))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), masked, dropped)


def test_ppo_value_targets_and_whitened_advantages():
    rl = rl_config("ppo", kl_coef=0.0)
    rl.ppo.gae_lambda = 1.0
    mask = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
    values = jnp.asarray([[0.5, 0.5, 0.5, 9.0], [0.0, 0.2, 9.0, 9.0]])
    rl.group_size = 2
    out = compute_advantages(rl, jnp.asarray([1.0, 0.0]), mask, jnp.zeros((2, 4)), None, values)
    # gamma = lambda = 1: returns are the outcome at every valid token (docs/algorithms.md#ppo-value-head-and-gae example)
    np.testing.assert_allclose(out["returns"], [[1, 1, 1, 0], [0, 0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(masked_mean(out["advantages"], mask), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["advantages"])[np.asarray(mask) == 0], 0.0)


@pytest.mark.parametrize("algorithm", ["rloo", "reinforce_pp", "ppo"])
def test_kl_in_reward_algorithms_run_without_reference(algorithm):
    rl = rl_config(algorithm, kl_coef=0.0)
    assert not needs_reference(rl)
    mask = jnp.asarray([[1, 1, 0], [1, 0, 0]] * 2, jnp.float32)
    rl.group_size = 2
    out = compute_advantages(rl, jnp.asarray([1.0, 0.0, 0.0, 1.0]), mask, old_values=jnp.zeros((4, 3)))
    assert np.all(np.isfinite(np.asarray(out["advantages"])))
    assert float(jnp.max(jnp.abs(out["advantages"]))) > 0


def test_reference_refresh_schedule(model):
    _, params = model
    rl = rl_config("grpo", ref_refresh_every=2)
    state = start_state(params, rl, optax.sgd(1.0))
    moved = state.replace(params=jax.tree.map(lambda x: x + 1.0, state.params))
    assert refresh_reference(moved, rl, 1) is moved
    refreshed = refresh_reference(moved, rl, 2)
    jax.tree.map(np.testing.assert_array_equal, refreshed.ref_params, moved.params)
    rl.ref_refresh_every = 0
    assert refresh_reference(moved, rl, 2) is moved


class ConstantReward(RewardMethod):
    def reward_fn(self, batch, reference_bytes):
        return {"reward": jnp.ones(batch["completion_mask"].shape[0]), "verifier_failures": jnp.asarray([1, 0, 0])}


def test_overlong_shaping_is_added_to_the_reward():
    rl = rl_config("dapo", overlong_max_len=6, overlong_cache_len=2)
    batch, _ = rollout()
    rewards, metrics = make_reward_scorer(rl, ConstantReward())(batch, jnp.zeros((N, 4), jnp.uint8))
    lengths = np.sum(np.asarray(batch["completion_mask"]), axis=-1)
    expected = 1.0 + np.where(lengths <= 4, 0.0, (4.0 - lengths) / 2)
    np.testing.assert_allclose(rewards["reward"], expected, atol=1e-6)
    np.testing.assert_allclose(metrics["reward/overlong_penalty"], np.mean(expected - 1.0), atol=1e-6)
    assert int(metrics["verifier_failures/exception"]) == 1


def fake_draws(reward_rounds):
    """draw(round) returning rows tagged with the round number and the given rewards `[B, G]`."""
    def draw(index):
        rewards = jnp.asarray(reward_rounds[index], jnp.float32).reshape(-1)
        rows = {"round": jnp.full((rewards.shape[0],), index), "row": jnp.arange(rewards.shape[0])}
        return rows, rewards, {"reward/reward": jnp.mean(rewards), "verifier_failures/timeout": jnp.int32(1)}
    return draw


def test_dynamic_sampling_collects_groups_with_signal():
    flat, mixed = [0, 0, 0, 0], [1, 0, 0, 1]
    merge = make_group_merger(G)
    draw = fake_draws([[flat, mixed], [flat, flat], [mixed, flat]])
    rows, valid, metrics = collect_groups(draw, merge, group_size=G, max_rounds=4, filter_groups=True)
    assert metrics["dynamic_sampling/rounds"] == 3.0 and metrics["dynamic_sampling/valid_fraction"] == 1.0
    assert metrics["verifier_failures/timeout"] == 3.0  # counters are summed over rounds
    np.testing.assert_array_equal(rows["round"], [0] * G + [2] * G)  # round 0's group 1, round 2's group 0
    np.testing.assert_array_equal(rows["row"], list(range(G, 2 * G)) + list(range(G)))
    # the cap: one round only, the flat group stays masked
    _, valid, metrics = collect_groups(draw, merge, group_size=G, max_rounds=1, filter_groups=True)
    np.testing.assert_array_equal(valid, [False, True])
    _, valid, _ = collect_groups(draw, merge, group_size=G, max_rounds=1, filter_groups=False)
    np.testing.assert_array_equal(valid, [True, True])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_arithmetic_config_per_algorithm(algorithm):
    config = build_config(CONFIGS / f"arithmetic_{algorithm}.py", ["--config.rl.steps=5"])
    assert config.rl.algorithm == algorithm and config.rl.steps == 5
    assert config.task.name == "arithmetic"


def test_validation_names_bad_rl_keys():
    config = build_config(CONFIGS / "arithmetic_dapo.py")
    config.rl.overlong_cache_len = config.rl.overlong_max_len + 1
    with pytest.raises(ConfigError, match="rl.overlong_cache_len"):
        validate(config)
    config = build_config(CONFIGS / "default.py")
    config.rl.max_grad_norm = 0.0
    with pytest.raises(ConfigError, match="rl.max_grad_norm"):
        validate(config)
