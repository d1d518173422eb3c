"""LaSeR in the RL learner (docs/algorithms.md#laser-last-token-self-reward): the batch builder's labels,
class-balanced weights and blended advantages, the update's self-verification term against a
direct computation, a few updates separating correct from wrong completions' self-rewards, the
config checks, and a short end-to-end run (the sampler's exclusion of the token: tests/sampling/test_continuous.py)."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrl_self.algorithms.advantages import group_advantages
from jaxrl_self.algorithms.self_verification import blend_self_advantages, class_balance_weights, self_reward_scores
from jaxrl_self.config import ConfigError, validate
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.recipes.rlvr import make_self_scorer
from jaxrl_self.recipes.runs import evaluate_run
from jaxrl_self.train.policy import logprob_after_completion, sequence_hidden
from jaxrl_self.train.rl_step import make_batch_builder, make_rl_update
from jaxrl_self.train.state import init_train_state

from tests.train.test_rl_step import B, G, N, model, rl_config, rollout  # noqa: F401 (the model fixture)
import tiny_job

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
VERDICT = 11
FINISHED = np.array([True, True, False, True, True, True, True, False])
BETA, C_REF = 0.5, -4.0  # the tiny random model's lz is near -log(12)


def verdict_rollout(coef, blend=0.0):
    batch, rewards = rollout()
    batch.update(finished=jnp.asarray(FINISHED), verdict_coef=jnp.full(N, coef, jnp.float32),
                 verdict_blend=jnp.full(N, blend, jnp.float32))
    return batch, rewards


def self_rewards(graphdef, params, batch):
    model_ = nnx.merge(graphdef, params)
    args = (batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], batch["completion_mask"])
    lz = logprob_after_completion(sequence_hidden(model_, *args), model_.output_head(), args[0].shape[1], args[3], VERDICT)
    return self_reward_scores(lz, beta_v=BETA, c_ref=C_REF)


def test_builder_labels_weights_and_blended_advantages(model):
    graphdef, params = model
    rl = rl_config("grpo", kl_coef=0.0)
    rl.self_verify.update(coef=0.3, beta=BETA, c_ref=C_REF, advantage_coef=0.25)
    state = init_train_state(params, optax.sgd(0.1), 0, with_reference=False)
    build = make_batch_builder(graphdef, rl, RewardMethod(), verdict_id=VERDICT)
    batch, rewards = verdict_rollout(0.3, blend=0.25)
    labels = np.asarray(rewards["reward"])
    group_valid = jnp.array([True, False])  # the second group is masked out: no label weighs there
    train_batch, _ = build(state, batch, rewards, group_valid, jax.random.key(0))
    np.testing.assert_array_equal(train_batch.verdict_labels, labels)
    finished = FINISHED & np.repeat(np.asarray(group_valid), G)
    np.testing.assert_allclose(train_batch.verdict_weights, 0.3 * np.asarray(class_balance_weights(labels, finished)), atol=1e-6)
    plain = group_advantages(labels.reshape(B, G))
    expected = blend_self_advantages(plain, self_rewards(graphdef, params, batch).reshape(B, G), finished.reshape(B, G),
                                     coef=0.25, min_std=rl.self_verify.min_std)
    np.testing.assert_allclose(train_batch.advantages, np.asarray(expected).reshape(-1), atol=1e-5)
    # before the blend's warm-up ends (verdict_blend 0) the advantages are the verifier's
    no_blend, _ = build(state, *verdict_rollout(0.3, blend=0.0)[:1], rewards, group_valid, jax.random.key(0))
    np.testing.assert_allclose(no_blend.advantages, np.asarray(plain).reshape(-1), atol=1e-6)


def test_update_adds_the_self_verification_term_and_learns_the_labels(model):
    graphdef, params = model
    rl = rl_config("grpo", kl_coef=0.0)
    rl.self_verify.update(coef=1.0, beta=BETA, c_ref=C_REF)
    batch, rewards = verdict_rollout(1.0)
    state = init_train_state(jax.tree.map(jnp.copy, params), optax.adam(0.05), 0, with_reference=False)
    train_batch, _ = make_batch_builder(graphdef, rl, RewardMethod(), verdict_id=VERDICT)(
        state, batch, rewards, jnp.ones(B, bool), jax.random.key(0))
    train_batch = train_batch.replace(advantages=jnp.zeros(N))  # the self-verification term alone
    labels, weights = np.asarray(train_batch.verdict_labels), np.asarray(train_batch.verdict_weights)
    scores = np.asarray(self_rewards(graphdef, params, batch))
    update = make_rl_update(graphdef, optax.adam(0.05), rl, verdict_id=VERDICT)
    state, metrics = update(state, train_batch, jax.random.key(0))
    assert abs(float(metrics["self_verify/loss"]) - np.sum(weights * (scores - labels) ** 2) / N) < 1e-5
    for _ in range(30):
        state, metrics = update(state, train_batch, jax.random.key(0))
    trained = np.asarray(self_rewards(graphdef, state.params, batch))
    correct, wrong = FINISHED & (labels == 1), FINISHED & (labels == 0)
    assert trained[correct].mean() - trained[wrong].mean() > 0.5 > scores[correct].mean() - scores[wrong].mean()


def test_the_held_out_scorer_gives_truncated_completions_no_self_reward(model):
    """A completion that hit max_new_tokens has no stop token to read the verdict after: the
    evaluation's self-reward is 0 for it, and the one after the stop token for a finished completion."""
    graphdef, params = model
    batch, _ = rollout()
    args = (batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], batch["completion_mask"])
    scores = np.asarray(make_self_scorer(graphdef, VERDICT, BETA, C_REF)(params, *args, jnp.asarray(FINISHED)))
    expected = np.asarray(self_rewards(graphdef, params, batch))
    np.testing.assert_allclose(scores[FINISHED], expected[FINISHED], atol=1e-6)
    np.testing.assert_array_equal(scores[~FINISHED], 0.0)
    assert np.all(expected[~FINISHED] != 0.0)


@pytest.mark.parametrize("overrides, message", [
    ({"rl.self_verify.beta": 0.0}, "config.rl.self_verify.beta: must be > 0"),
    ({"rl.self_verify.advantage_coef": 0.1}, "needs rl.self_verify.coef > 0"),
    ({"rl.self_verify.coef": 0.1, "rl.reward": "ttrl"}, "needs rl.reward = 'verifier'"),
    ({"rl.self_verify.coef": 0.1, "rl.algorithm": "ppo"}, "one advantage per completion"),
])
def test_bad_self_verify_settings_are_refused(overrides, message):
    config = tiny_job.default_config_with(overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(config)


@pytest.mark.long  # a LaSeR run through the CLI, ~37 s: opt-in (docs/testing.md); the loss and scorer tests above stay in the suite
def test_a_short_run_logs_the_self_verification_loss_and_held_out_metrics(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("laser") / "run"
    result = tiny_job.train(workdir, tmp_path_factory.mktemp("laser_cache"), "--config.rl.self_verify.coef=0.1",
                            "--config.rl.self_verify.beta=0.5", "--config.rl.self_verify.c_ref=-6.0",
                            "--config.sft.steps=2", "--config.rl.steps=2", "--config.eval.every=2", "--config.checkpoint.every=4")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = tiny_job.metrics_rows(workdir)
    assert sum("self_verify/loss" in row for row in rows) == 2
    evaluations = [row for row in rows if "eval/self_verify/pass@1" in row]  # after SFT and after RL
    assert len(evaluations) == 2 and all(0 <= row["eval/self_verify/pass@1"] <= 1 for row in evaluations)
    results = evaluate_run(workdir, num_samples=2, ks=(1, 2))  # `jaxrl-self eval` on the run
    assert set(results["self_verify"]) >= {"auroc", "best_of_n", "maj@2", "self_weighted_maj@2"}
    assert 0 <= results["self_verify"]["pass@1"] <= 1
