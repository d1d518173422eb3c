"""Extending a finished run (docs/runs.md): the same workdir and config with more `rl.steps`
continues from the last checkpoint; with `rl.lr_schedule = "constant"` the result is bit-identical
to a run started with the final length. Fewer steps are refused."""
from __future__ import annotations

import json
import logging

import pytest

from jaxrl_self.config import ConfigError, load_config_file
from jaxrl_self.train.workdir import claim_workdir, prepare_workdir
from tiny_job import REPO, assert_same_state, cache_dir, checkpoint_steps, load_state, metrics_rows, train

CONSTANT = "--config.rl.lr_schedule=constant"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(2-step run extended to 4, fresh 4-step run), both with a constant learning rate."""
    cache, root = cache_dir(tmp_path_factory), tmp_path_factory.mktemp("extend")
    short = train(root / "extended", cache, CONSTANT, "--config.rl.steps=2")
    assert short.returncode == 0, short.stderr[-3000:]
    extended = train(root / "extended", cache, CONSTANT, "--config.rl.steps=4")
    assert extended.returncode == 0, extended.stderr[-3000:]
    fresh = train(root / "fresh", cache, CONSTANT, "--config.rl.steps=4")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    return root / "extended", root / "fresh", extended


def test_extended_run_equals_a_run_of_the_final_length(runs):
    extended, fresh, result = runs
    assert "extending the run" in result.stderr and "config.rl.steps 2 -> 4" in result.stderr
    assert json.loads((extended / "config.json").read_text())["rl"]["steps"] == 4
    steps = checkpoint_steps(extended / "checkpoints")
    assert steps == checkpoint_steps(fresh / "checkpoints") and steps[-1] == 8  # 4 SFT + 4 RL steps
    assert_same_state(load_state(extended / "checkpoints", 8), load_state(fresh / "checkpoints", 8))
    assert metrics_rows(extended)[-1] == metrics_rows(fresh)[-1]
    assert [s for s in checkpoint_steps(extended / "best_checkpoint")] == checkpoint_steps(fresh / "best_checkpoint")
    assert "after RL" in (extended / "report.md").read_text()


def _config(**rl):
    config = load_config_file(REPO / "configs" / "default.py")
    config.rl.update(rl)
    return config


def test_length_may_grow_not_shrink_and_cosine_warns(tmp_path, caplog):
    claim_workdir(_config(steps=10), tmp_path)
    with pytest.raises(ConfigError, match="config.rl.steps = 5 is fewer than the 10"):
        prepare_workdir(_config(steps=5), tmp_path)
    with pytest.raises(ConfigError, match="differs at: config.rl.learning_rate"):
        prepare_workdir(_config(steps=20, learning_rate=1.0), tmp_path)
    with caplog.at_level(logging.INFO):
        prepare_workdir(_config(steps=20), tmp_path)
    assert [r.levelname for r in caplog.records if "rl.lr_schedule is 'cosine'" in r.message] == ["WARNING"]
    assert json.loads((tmp_path / "config.json").read_text())["rl"]["steps"] == 10  # prepare writes nothing
    claim_workdir(_config(steps=20), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["rl"]["steps"] == 20
    caplog.clear()
    with caplog.at_level(logging.INFO):
        prepare_workdir(_config(steps=30, lr_schedule="constant"), tmp_path.parent / "other")
        claim_workdir(_config(steps=30, lr_schedule="constant"), tmp_path.parent / "other")
        prepare_workdir(_config(steps=40, lr_schedule="constant"), tmp_path.parent / "other")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
