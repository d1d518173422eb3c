"""Absolute Zero: learnability and format-aware rewards, TRR++ classes, program validation in the
sandbox, grading, the task buffer, and a fixed-seed self-play run (resumed from a checkpoint to the
same final buffer) whose proposer valid-task rate on its training references goes up.

That rate is measured on the moving buffer: the references start as the identity program and become
the model's own proposals. On the fixed held-out measures (valid rate on fixed reference prompts,
solver greedy and sampled accuracy on fixed synthetic tasks, none of whose prompts the warm start
shows) this run does not improve: the warm start leaves the solver at ~12% greedy, ~6% correct
answers at temperature 1, too sparse a signal for 24 steps to lift (the figures measured before
and after are in docs/results.md#figures-recorded-by-the-tests). Solver-only RL on the held-out family itself does not lift it
either (README); the variants tried are listed there. Those measures are asserted to be reported and
not to collapse (valid rate down by < 0.15, accuracies above half their start), not to rise."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxrl_self.algorithms.advantages import task_relative_advantages
from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import load_config_file, validate
from jaxrl_self.recipes import absolute_zero as az
from jaxrl_self.recipes import absolute_zero_tasks as azt
from jaxrl_self.recipes import train_and_evaluate
from jaxrl_self.train.context import RunContext
from jaxrl_self.train.loop import fresh_state
from jaxrl_self.train.workdir import CHECKPOINT_DIR
from jaxrl_self.rewards.learnability import format_aware_reward, learnability_reward

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "absolute_zero.py"


def test_learnability_examples():
    np.testing.assert_allclose(learnability_reward(np.array([0, 8, 2, 6]) / 8), [0.0, 0.0, 0.75, 0.25])


def test_format_aware_reward():
    rewards = format_aware_reward(np.array([0.75, 0.75, 0.75]), np.array([True, False, False]), np.array([True, True, False]))
    np.testing.assert_allclose(rewards, [0.75, -0.5, -1.0])


def test_trr_classes_normalise_each_role_and_kind_apart():
    ids = az.trr_class_ids(per_kind=2, group=3)
    np.testing.assert_array_equal(ids[:6], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ids[6:], np.repeat([3, 4, 5], 6))
    rewards = np.random.default_rng(0).normal(size=ids.shape).astype(np.float32)
    rewards[ids == 4] += 100.0  # another class's scale must not leak into the others
    advantages = np.asarray(task_relative_advantages(rewards, ids, 6, eps=1e-6))
    for c in range(6):
        r = rewards[ids == c]
        np.testing.assert_allclose(advantages[ids == c], (r - r.mean()) / (r.std(ddof=1) + 1e-6), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("source, status", [
    ("lambda x:x*3+1", azt.OK),
    ("lambda x: (x + 2) % 5", azt.OK),
    ("lambda x:__import__('os').getpid()", azt.INVALID),
    ("lambda x:os.system('true')", azt.INVALID),
    ("lambda x:x.__class__", azt.INVALID),
    ("lambda x:9**9**9", azt.INVALID),
    ("import os", azt.FORMAT_ERROR),
    ("lambda x,y:x", azt.FORMAT_ERROR),
    ("lambda x:x+", azt.FORMAT_ERROR),
    ("x+1", azt.FORMAT_ERROR),
])
def test_check_program(source, status):
    assert azt.check_program(source) == status


def test_validation_rejects_crash_nondeterminism_forbidden_and_hangs():
    proposals = [
        ("lambda x:x*2+1", (1, 4)),
        ("lambda x:x//0", (1,)),  # crashes
        ("lambda x:hash(str(x))%1000", (1, 2, 3)),  # string hashing differs between processes
        ("lambda x:__import__('os').getpid()", (1,)),  # forbidden module
        ("lambda x:[0 for _ in iter(int,1)]", (1,)),  # never returns: per-item timeout
        ("lambda x:'a'", (1,)),  # not an int
        ("lambda x:x*99999", (5,)),  # beyond MAX_ABS_VALUE
        ("lambda x:", (1,)),  # format error
    ]
    results = azt.validate_proposals(proposals)
    assert results[0] == (azt.OK, (3, 9))
    assert [status for status, _ in results[1:]] == [azt.INVALID] * 6 + [azt.FORMAT_ERROR]


def test_grade_answers():
    ded = azt.Task("ded", "lambda x:x*2+1", (3,), (7,))
    abd = azt.Task("abd", "lambda x:x%3", (4,), (1,))
    ind = azt.Task("ind", "lambda x:x+2", (1, 2, 3, 4, 5), (3, 4, 5, 6, 7))
    tasks = [ded, ded, ded, abd, abd, abd, ind, ind, ind]
    answers = ["7", "8", "seven", "7", "2", "x", "lambda x:2+x", "lambda x:x+2 if x<5 else 0", "lambda x:"]
    assert azt.grade_answers(tasks, answers) == ["correct", "wrong", azt.FORMAT_ERROR, "correct", "wrong", azt.FORMAT_ERROR,
                                                 "correct", "wrong", azt.FORMAT_ERROR]


def test_prompts_and_parsing_round_trip():
    rng = np.random.default_rng(0)
    tokenizer = azt.make_tokenizer()
    for kind in azt.KINDS:
        task = azt.random_task(kind, rng)
        for text in (azt.proposer_prompt(task), azt.proposal_completion(task), azt.solver_prompt(task), azt.solver_answer(task)):
            assert tokenizer.decode(tokenizer.encode(text)) == text
        program, argument = azt.parse_proposal(kind, azt.proposal_completion(task))
        assert program == task.program and argument == (None if kind == "ind" else task.inputs[0])
        assert azt.validate_proposals([(task.program, task.inputs)]) == [(azt.OK, task.outputs)]
    assert azt.parse_proposal("ded", "<prog>lambda x:x<in>") is None
    assert azt.parse_proposal("ind", "lambda x:x") is None


def test_buffer_seeded_deduplicated_capped_and_round_trips():
    buffer = azt.TaskBuffer(max_size=3)
    assert {kind: [t.program for t in tasks] for kind, tasks in buffer.tasks.items()} == {k: [azt.IDENTITY] for k in azt.KINDS}
    assert not buffer.add(azt.Task("ded", azt.IDENTITY, (1,), (1,)))
    for c in range(1, 5):
        assert buffer.add(azt.Task("ded", f"lambda x:x+{c}", (1,), (1 + c,)))
    assert [t.program for t in buffer.tasks["ded"]] == ["lambda x:x+2", "lambda x:x+3", "lambda x:x+4"]
    restored = azt.TaskBuffer.from_json(json.loads(json.dumps(buffer.to_json())))
    assert restored.tasks == buffer.tasks and restored.max_size == 3
    assert buffer.sample("ind", np.random.default_rng(0), 2) == [buffer.tasks["ind"][0]] * 2


def tiny_config():
    config = load_config_file(CONFIG)
    config.model.update(dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128))
    config.sft.update(dict(steps=100, batch_size=64))
    config.rl.update(dict(steps=24, learning_rate=5e-4))
    config.method.update(dict(proposals_per_kind=8, eval_tasks_per_kind=32))
    config.eval.every = 1000
    config.checkpoint.every = 4
    config.log_every = 50
    config.mesh.num_devices = 1  # one device, as the CLI on CPU (tests/conftest.py)
    validate(config)
    return config


@pytest.fixture(scope="module")
def self_play_run(tmp_path_factory):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    workdir = tmp_path_factory.mktemp("absolute_zero")
    summary = train_and_evaluate(tiny_config(), workdir)
    yield workdir, summary
    jax.config.update("jax_compilation_cache_dir", None)


@pytest.mark.long  # the whole tiny self-play run, ~1.5 min on 2 cores: opt-in (docs/testing.md)
def test_self_play_raises_the_valid_task_rate(self_play_run):
    workdir, summary = self_play_run
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    valid = [row["propose/valid_rate"] for row in rows if "propose/valid_rate" in row]
    assert len(valid) == tiny_config().rl.steps
    assert np.mean(valid[-4:]) > np.mean(valid[:4]) + 0.1
    held_out = ("eval/valid_rate", "eval/solver_accuracy", "eval/solver_sampled_accuracy")
    assert set(held_out) <= set(summary)
    # reported before and after, not asserted to rise (module docstring); a collapse fails
    assert summary["eval/valid_rate"]["after RL"] > summary["eval/valid_rate"]["before RL"] - 0.15, summary["eval/valid_rate"]
    for name in held_out[1:]:
        assert summary[name]["after RL"] > 0.5 * summary[name]["before RL"], (name, summary[name])


@pytest.mark.long  # shares the self-play run above
def test_resume_restores_the_task_buffer(self_play_run):
    workdir, summary = self_play_run
    config = tiny_config()
    final_step = config.sft.steps + config.rl.steps

    def newest_meta():
        recipe = az.AbsoluteZero(config)
        ctx = RunContext(config, scratch_tokenizer=recipe.scratch_tokenizer(config))
        ckpt = Checkpointer(workdir / CHECKPOINT_DIR)
        step, _, meta = ckpt.restore_latest(lambda meta: fresh_state(ctx, recipe, meta["phase"]))
        ckpt.close()
        return step, meta

    step, meta = newest_meta()
    assert step == final_step and sum(len(v) for v in meta["extra"]["buffers"]["tasks"].values()) > 3
    shutil.rmtree(workdir / CHECKPOINT_DIR / str(final_step))  # lose the last 4 steps
    resumed = train_and_evaluate(config, workdir)  # continues from the checkpoint at RL step 20 with its buffer
    assert newest_meta()[1]["extra"]["buffers"] == meta["extra"]["buffers"]
    assert resumed == summary
