"""RISE with a one-token verdict (docs/algorithms.md#rise-generated-self-verification): the worked example's
rewards and advantages, the choice of solutions, the verification rows against a direct forward
pass, zero gradient through the context tokens, the config checks and a short end-to-end run."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_self.algorithms.advantages import group_advantages
from jaxrl_self.algorithms.self_verification import verification_rewards
from jaxrl_self.config import ConfigError, validate
from jaxrl_self.recipes.runs import evaluate_run, load_run
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.models.tokenizer import CharTokenizer
from jaxrl_self.train.rise import (RiseTokens, append_token, balanced_rows, choose_solutions, make_rise_scorer, make_verification_rollout,
                                 rise_token_ids, rise_tokens_to_add)
from jaxrl_self.train.rl_step import policy_loss

from tests.train.test_rl_step import G, model, rl_config, rollout  # noqa: F401 (the model fixture)
import tiny_job

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
IDS = RiseTokens(marker=(9,), yes=10, no=11)  # in the tiny model's vocabulary of 12


def test_worked_example_rewards_and_advantages():
    """A solution labelled wrong (its outcome reward was -0.5); four verifications say "wrong",
    "correct", "wrong" and nothing: rewards [1, -0.5, 1, -1], GRPO advantages (std ddof 1)."""
    rewards = verification_rewards([0, 1, 0, -1], 0)
    np.testing.assert_allclose(rewards, [1.0, -0.5, 1.0, -1.0])
    advantages = group_advantages(rewards[None], std_ddof=1)[0]
    np.testing.assert_allclose(advantages, [0.8489, -0.6063, 0.8489, -1.0914], atol=1e-4)


def test_append_token_writes_after_each_rows_last_token():
    tokens = jnp.asarray([[5, 6, 2, 0], [7, 0, 0, 0], [1, 2, 3, 4]])
    mask = jnp.asarray([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], bool)
    out, out_mask, at = append_token(tokens, mask, jnp.asarray([9, 8, 7]))
    np.testing.assert_array_equal(at, [3, 1, 4])
    np.testing.assert_array_equal(out, [[5, 6, 2, 9, 0], [7, 8, 0, 0, 0], [1, 2, 3, 4, 7]])
    np.testing.assert_array_equal(out_mask.sum(1), [4, 2, 5])


@pytest.mark.parametrize("correct_count, finished_count, count", [(10, 16, 8), (1, 16, 8), (15, 16, 8), (4, 5, 8)])
def test_choose_solutions_balances_classes_and_prefers_finished_rows(correct_count, finished_count, count):
    n = 20
    correct = np.arange(n) < correct_count
    finished = np.zeros(n, bool)
    finished[np.random.default_rng(1).permutation(n)[:finished_count]] = True
    rows = choose_solutions(correct, finished, count, np.random.default_rng(0))
    assert len(rows) == len(set(rows.tolist())) == count
    n_right, n_wrong = int(np.sum(finished & correct)), int(np.sum(finished & ~correct))
    expected_right = min(n_right, max(count // 2, count - n_wrong))
    assert int(np.sum(finished[rows] & correct[rows])) == expected_right
    assert int(np.sum(finished[rows])) == min(count, int(finished.sum()))
    with pytest.raises(ValueError, match="cannot choose"):
        choose_solutions(correct, finished, n + 1, np.random.default_rng(0))


def full_logits(model_, ids):
    """The last position's logits `[V]` of one unpadded sequence `ids [1, L]`."""
    return model_(ids, jnp.arange(ids.shape[1])[None], jnp.ones(ids.shape, bool))[0][0, -1].astype(jnp.float32)


def test_balanced_rows_keep_as_many_right_as_wrong_solutions():
    np.testing.assert_array_equal(balanced_rows([True, False, True, True, False]), [True, True, True, False, True])
    np.testing.assert_array_equal(balanced_rows([True, True, True]), [False, False, False])  # one class: none
    np.testing.assert_array_equal(balanced_rows([False, True]), [True, True])


def direct_log_odds(graphdef, params, prompt_tokens, prompt_mask, context_tokens, context_mask):
    """log P(yes) - log P(no) from the model's logits over each unpadded sequence, one row at a time."""
    model_ = nnx.merge(graphdef, params)
    out = []
    for p, pm, c, cm in zip(prompt_tokens, prompt_mask, context_tokens, context_mask):
        ids = jnp.concatenate([p[pm], c[cm]])[None]
        logits = full_logits(model_, ids)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32))
        out.append(logp[IDS.yes] - logp[IDS.no])
    return np.asarray(out)


def test_reserved_tokens_are_added_only_where_the_tokenizer_lacks_them():
    tokenizer = CharTokenizer("0123456789=", ("<answer>",))
    assert rise_tokens_to_add(tokenizer, "==", "1", "0") == []  # a two-token marker, one-token verdicts
    assert rise_tokens_to_add(tokenizer, "<verify>", "<yes>", "10") == ["<yes>", "10", "<verify>"]


@pytest.mark.parametrize("marker", [(9,), (9, 8)])
def test_verification_rows_scores_and_rewards(model, marker):
    graphdef, params = model
    ids = IDS._replace(marker=marker)
    m = len(marker)
    batch, _ = rollout()
    rows = np.array([0, 3, 5, 6])
    args = [jnp.asarray(np.asarray(batch[k])[rows]) for k in ("prompt_tokens", "prompt_mask", "completion_tokens", "completion_mask")]
    labels = jnp.asarray([1, 0, 1, 0])
    contexts, context_mask = args[2], args[3]
    for token in marker:
        contexts, context_mask, _ = append_token(contexts, context_mask, token)
    expected = direct_log_odds(graphdef, params, args[0], args[1], contexts, context_mask)
    scores = make_rise_scorer(graphdef, ids)(params, *args)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-expected)), atol=1e-5)

    verify, rewards, metrics = make_verification_rollout(graphdef, ids, G, 1.0)(params, *args, labels, jax.random.key(3))
    t = args[2].shape[1]
    assert verify["completion_tokens"].shape == (4 * G, t + m + 1) and verify["prompt_tokens"].shape == (4 * G, args[0].shape[1])
    lengths = np.repeat(np.asarray(args[3]).sum(1), G)
    mask = np.asarray(verify["completion_mask"])
    np.testing.assert_array_equal(mask.sum(1), 1)  # the verdict alone is in the loss
    np.testing.assert_array_equal(np.argmax(mask, 1), lengths + m)  # after the solution and the marker
    np.testing.assert_array_equal(np.asarray(verify["env_mask"]).sum(1), lengths + m)  # read, not trained
    tokens = np.asarray(verify["completion_tokens"])
    for i, token in enumerate(marker):
        np.testing.assert_array_equal(tokens[np.arange(4 * G), lengths + i], token)
    verdicts = tokens[np.arange(4 * G), lengths + m]
    assert set(verdicts.tolist()) <= {ids.yes, ids.no}
    said_yes = (verdicts == ids.yes).astype(int)
    np.testing.assert_allclose(rewards, np.where(said_yes == np.repeat(labels, G), 1.0, -0.5))
    assert abs(float(metrics["rise/accuracy"]) - np.mean(said_yes == np.repeat(labels, G))) < 1e-6

    greedy, _, _ = make_verification_rollout(graphdef, ids, G, 0.0)(params, *args, labels, jax.random.key(3))
    greedy_verdicts = np.asarray(greedy["completion_tokens"])[np.arange(4 * G), lengths + m]
    np.testing.assert_array_equal(greedy_verdicts == ids.yes, np.repeat(expected > 0, G))


def test_the_loss_trains_the_verdict_alone(model):
    """A verification row's loss gradient is -A grad log P(verdict | prompt, solution, marker): the
    context is read (env_mask) but its tokens carry no loss."""
    graphdef, params = model
    batch, _ = rollout()
    args = [jnp.asarray(batch[k]) for k in ("prompt_tokens", "prompt_mask", "completion_tokens", "completion_mask")]
    labels = jnp.asarray([1, 0, 1, 0, 1, 0, 1, 0])
    rl = rl_config("grpo", kl_coef=0.0, prompts_per_step=8)
    rollout_fn = make_verification_rollout(graphdef, IDS, G, 1.0)
    one = [a[:1] for a in args]  # one context's G rows: the reference takes one eager pass per row
    verify, rewards, _ = rollout_fn(params, *one, labels[:1], jax.random.key(0))
    advantages = group_advantages(rewards.reshape(-1, G)).reshape(-1)
    train_batch = RolloutBatch(**verify, advantages=advantages)
    mask = train_batch.completion_mask.astype(jnp.float32)

    def loss(p):
        return policy_loss(nnx.merge(graphdef, p), train_batch, rl, jnp.float32(len(advantages)), jnp.sum(mask))[0]

    def reference(p):  # the verdict's log-prob after the whole context, one row at a time
        model_ = nnx.merge(graphdef, p)
        logps = []
        for i in range(len(advantages)):
            ids = jnp.concatenate([train_batch.prompt_tokens[i][train_batch.prompt_mask[i]],
                                   train_batch.completion_tokens[i][train_batch.env_mask[i]]])[None]
            verdict = train_batch.completion_tokens[i][jnp.argmax(train_batch.completion_mask[i])]
            logps.append(jax.nn.log_softmax(full_logits(model_, ids))[verdict])
        return -jnp.mean(advantages * jnp.stack(logps))

    grads, expected = jax.jit(jax.grad(loss))(params), jax.grad(reference)(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4), grads, expected)
    assert float(jnp.max(jnp.abs(advantages))) > 0.1  # the verdicts differ: a gradient to compare


@pytest.mark.parametrize("overrides, message", [
    ({"rl.rise.prompts": -1}, "config.rl.rise.prompts: must be >= 0"),
    ({"rl.rise.prompts": 8, "rl.reward": "ttrl"}, "needs rl.reward = 'verifier'"),
    ({"rl.rise.prompts": 8, "rl.algorithm": "ppo"}, "one advantage per completion"),
    ({"rl.rise.prompts": 8, "rl.self_verify.coef": 0.1}, "turn one off"),
    ({"rl.rise.prompts": 1000}, "at most prompts_per_step*group_size = 128"),
    ({"rl.rise.prompts": 8, "method.loop": "star"}, "rl.rise is for the RL recipe"),
    ({"rl.rise.prompts": 8, "rl.rise.no": "<yes>"}, "must differ from rl.rise.yes"),
])
def test_bad_rise_settings_are_refused(overrides, message):
    config = tiny_job.default_config_with(overrides)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        validate(config)


@pytest.mark.long  # a RISE run through the CLI, ~33 s: opt-in (docs/testing.md); the loss and gradient tests above stay in the suite
def test_a_short_run_trains_verifications_and_reports_them(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("rise") / "run"
    result = tiny_job.train(workdir, tmp_path_factory.mktemp("rise_cache"), "--config.rl.rise.prompts=4",
                            "--config.sft.steps=2", "--config.rl.steps=2", "--config.eval.every=2", "--config.checkpoint.every=4")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = tiny_job.metrics_rows(workdir)
    trained = [row for row in rows if "rise/accuracy" in row]
    assert len(trained) == 2 and all(0 <= row["rise/balanced_accuracy"] <= 1 for row in trained)
    evaluations = [row for row in rows if "eval/self_verify/pass@1" in row]  # after SFT and after RL
    assert len(evaluations) == 2
    results = evaluate_run(workdir, num_samples=2, ks=(1, 2))  # `jaxrl-self eval` on the run
    assert set(results["self_verify"]) >= {"auroc", "balanced_accuracy", "best_of_n", "self_weighted_maj@2"}
    run, _ = load_run(workdir)  # the RISE tokens: in the vocabulary, never drawn by a solution sampler
    rise = run.config.rl.rise
    ids = rise_token_ids(run.tokenizer, rise.marker, rise.yes, rise.no)
    reserved = {*ids.marker, ids.yes, ids.no}
    assert len(reserved) == 3 and reserved <= set(run.never_sampled) and max(reserved) < run.model_config.vocab_size
