"""A reward of your own (docs/rewards.md): the example of docs/examples/length_reward.py, named in a
config as "module:function" from outside the package, is what the RL loop rewards with, is recorded
in the run's config.json, and scores the run's evaluation; a reward that raises logs its traceback
once and counts its rows under verifier_failures/exception."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from jaxrl_self.config import REWARD_METHODS, ConfigError, load_config_file, validate
from jaxrl_self.methods import METHODS, build_reward_method, run_scorer
from jaxrl_self.recipes import train_and_evaluate
from jaxrl_self.recipes.runs import evaluate_run
from jaxrl_self.rewards.host import FAILURE_REASONS, encode_references, forget_logged_failures
from jaxrl_self.tasks.encoding import encode_pairs
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.train.rl_step import make_reward_scorer

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "docs" / "examples"


def tiny_config(reward: str = "length_reward:reward"):
    """configs/default.py on 1-digit addition with a tiny model: 20 SFT steps, 2 RL steps."""
    config = load_config_file(REPO / "configs" / "default.py")
    config.task.update(dict(digits=1, max_prompt_len=8, test_size=8))
    config.model.update(dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, intermediate_size=64,
                             max_position_embeddings=32))
    config.sft.update(dict(steps=20, batch_size=16, learning_rate=3e-3, warmup_steps=2))
    config.rl.update(dict(steps=2, prompts_per_step=4, group_size=4, max_new_tokens=16, reward=reward))
    config.eval.update(dict(num_examples=8, batch_size=8, every=1000))
    config.checkpoint.every = 1000
    config.log_every = 1
    config.mesh.num_devices = 1
    validate(config)
    return config


class Recorder:
    """Wraps a reward function and keeps every call's (completions, prompts, references, rewards)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, completions, prompts, references):
        rewards = self.fn(completions, prompts, references)
        self.calls.append((list(completions), list(prompts), list(references), list(rewards)))
        return rewards


def check_rows(call):
    """Every row pairs a 1-digit addition prompt with its own answer as reference."""
    completions, prompts, references, rewards = call
    assert len(completions) == len(prompts) == len(references) == len(rewards)
    for prompt, reference in zip(prompts, references):
        a, b = prompt.rstrip("=").split("+")
        assert int(a) + int(b) == int(reference), (prompt, reference)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, workdir, recorder): a tiny run rewarded by docs/examples/length_reward.py, imported
    from outside the package, its calls recorded (and still recorded in the tests that use it)."""
    optimizations_off = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)  # compile-bound (tests/conftest.py fast_compile)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLES))
        import length_reward

        assert length_reward.reward(["<think>3+1=4</think><answer>4</answer>", "<answer>5</answer>"], ["3+1="] * 2,
                                    ["4", "4"]) == [0.62, 0.0]
        recorder = Recorder(length_reward.reward)
        patch.setattr(length_reward, "reward", recorder)
        config = tiny_config()
        workdir = tmp_path_factory.mktemp("run")
        try:
            train_and_evaluate(config, workdir)
            yield config, workdir, recorder
        finally:
            jax.config.update("jax_disable_most_optimizations", optimizations_off)


def test_the_loop_rewards_with_the_function(trained):
    config, workdir, recorder = trained
    # one call of prompts_per_step * group_size rows per RL step, and the logged rewards are its values;
    # the held-out evaluations also score with it, one row per call
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rl_rows = [row for row in rows if "reward/mean" in row]
    batch_calls = [call for call in recorder.calls if len(call[0]) > 1]
    assert len(rl_rows) == len(batch_calls) == config.rl.steps
    held_out = [call for call in recorder.calls if len(call[0]) == 1]
    assert len(held_out) == 2 * config.eval.num_examples, len(held_out)  # after SFT and after the last step
    for row, call in zip(rl_rows, batch_calls):
        check_rows(call)
        assert len(call[0]) == config.rl.prompts_per_step * config.rl.group_size
        assert row["reward/mean"] == pytest.approx(np.mean(call[3]), abs=1e-6)
        assert row["accuracy/train"] == pytest.approx(row["reward/mean"], abs=1e-6)  # "correct" is the reward
        assert all(row[f"verifier_failures/{reason}"] == 0 for reason in FAILURE_REASONS)


def test_the_run_records_it_and_its_scorer_is_the_function(trained):
    _, workdir, _ = trained
    recorded = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
    assert recorded.rl.reward == "length_reward:reward"  # what a resumed run and `eval` of the run read
    task = build_task(recorded.task)
    score = run_scorer(recorded, task)
    assert score("<think>3+1=4</think><answer>4</answer>", "4", "3+1=") == pytest.approx(
        {"reward": 0.62, "correct": 0.62, "format_ok": 1.0})
    assert score("<answer>5</answer>", "4", "3+1=")["correct"] == 0.0
    assert score("<answer>4</answer>", "not a number", "3+1=") == {"reward": 0.0, "correct": 0.0, "format_ok": 0.0}
    builtin = run_scorer(tiny_config("verifier"), task)
    assert builtin("<think>3+1=4</think><answer>4</answer>", "4") == {"reward": 1.0, "correct": 1.0, "format_ok": 1.0}


def test_eval_of_the_run_scores_with_the_function(trained):
    _, workdir, recorder = trained
    del recorder.calls[:]
    results = evaluate_run(workdir)
    assert recorder.calls, "evaluate_run did not call the run's reward"
    for call in recorder.calls:
        check_rows(call)
    rewards = [r for call in recorder.calls for r in call[3]]
    assert results["accuracy"] == pytest.approx(np.mean(rewards), abs=1e-6)


def raising_reward(completions, prompts, references):
    raise ValueError("no reward for " + prompts[0])


def test_a_reward_that_raises_logs_its_traceback_once_and_counts_the_rows(caplog):
    config = tiny_config(f"{__name__}:raising_reward")
    task = build_task(config.task)
    method = build_reward_method(config, task, task.tokenizer)
    examples = [task.examples("train")[i] for i in range(4)]
    prompts = method.prompts(examples)
    batch = {k: np.asarray(v) for k, v in encode_pairs(task.tokenizer, prompts, ["<answer>1</answer>"] * 4, 8, 16).items()}
    refs = encode_references(method.references(examples), config.task.max_reference_len)
    score = make_reward_scorer(config.rl, method)
    forget_logged_failures()
    with caplog.at_level(logging.WARNING, logger="jaxrl_self.rewards.host"):
        for _ in range(3):
            rewards, metrics = score(batch, refs)
            np.testing.assert_array_equal(rewards["reward"], 0.0)
            assert int(metrics["verifier_failures/exception"]) == 4
            assert int(metrics["verifier_failures/bad_output"]) == 0
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert "raising_reward" in tracebacks[0].getMessage()
    assert "no reward for " + examples[0].prompt in caplog.text  # the exception itself, with the exact prompt
    assert "Traceback" in caplog.text
    assert sum("reward failures in 4 of 4 rows" in r.getMessage() for r in caplog.records) == 3


def test_a_reward_that_cannot_be_used_is_a_config_error_naming_the_key(tmp_path, monkeypatch):
    assert set(REWARD_METHODS) == set(METHODS)
    for bad in ("length_reward", "length_reward:", "a:b:c", "my-module:reward"):
        with pytest.raises(ConfigError, match="config.rl.reward"):
            tiny_config(bad)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_reward.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "not_a_function.py").write_text("reward = 3\n")
    task = build_task(tiny_config().task)
    for spec, message in [("no_such_module_xyz:reward", "cannot import the module 'no_such_module_xyz'"),
                          ("broken_reward:reward", "importing 'broken_reward' failed"),
                          ("length_reward:no_such_function", "has no 'no_such_function'"),
                          ("not_a_function:reward", "not a function")]:
        monkeypatch.syspath_prepend(str(EXAMPLES))
        config = tiny_config("length_reward:reward")
        config.rl.reward = spec
        with pytest.raises(ConfigError, match="config.rl.reward") as error:
            build_reward_method(config, task, task.tokenizer)
        assert message in str(error.value)
