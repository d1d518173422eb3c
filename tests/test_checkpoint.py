"""Checkpointer: round trip, fallback past corrupted checkpoints, no fallback past a model
mismatch, half-written checkpoints ignored, best checkpoint kept by accuracy."""
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.checkpoint import CheckpointError, Checkpointer
from tiny_job import assert_same_state, cache_dir, checkpoint_steps, load_state, reference_run, train


def _state(scale: float, width: int = 3):
    return {"params": {"w": jnp.full((4, width), scale, jnp.float32), "b": jnp.arange(width, dtype=jnp.float32) * scale},
            "step": jnp.int32(int(scale)), "key": jax.random.key_data(jax.random.key(int(scale)))}


def _saved(directory, steps=(1, 2, 3), **kwargs) -> Checkpointer:
    ckpt = Checkpointer(directory, **kwargs)
    for step in steps:
        ckpt.save(step, _state(float(step)), {"phase": "rl", "rl_step": step, "iterator": {"position": step * 4}})
    ckpt.wait()
    return ckpt


def _assert_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_round_trip_is_bit_identical_and_keeps_the_last_n(tmp_path):
    ckpt = _saved(tmp_path / "ckpt", steps=(1, 2, 3, 4), max_to_keep=2)
    ckpt.close()
    step, state, meta = Checkpointer(tmp_path / "ckpt").restore_latest(lambda meta: _state(0.0))
    assert (step, meta) == (4, {"phase": "rl", "rl_step": 4, "iterator": {"position": 16}})
    _assert_equal(state, _state(4.0))
    assert Checkpointer(tmp_path / "ckpt").steps() == [3, 4]


def test_empty_directory_restores_nothing(tmp_path):
    assert Checkpointer(tmp_path / "ckpt").restore_latest(lambda meta: _state(0.0)) is None


@pytest.mark.parametrize("damage", ["array_data", "all_files"])
def test_corrupted_latest_falls_back_to_previous_with_a_warning(tmp_path, caplog, damage):
    _saved(tmp_path / "ckpt").close()
    newest = tmp_path / "ckpt" / "3"
    files = [p for p in newest.rglob("*") if p.is_file()]
    if damage == "array_data":
        files = [p for p in files if p.parent.name == "d"]  # ocdbt data files of the arrays
    assert files
    for path in files:
        path.write_bytes(b"\x00garbage" * 3)
    ckpt = Checkpointer(tmp_path / "ckpt")
    with caplog.at_level(logging.WARNING, logger="jaxrl_self.checkpoint"):
        step, state, meta = ckpt.restore_latest(lambda meta: _state(0.0))
    assert step == 2 and meta["rl_step"] == 2
    _assert_equal(state, _state(2.0))
    assert "checkpoint at step 3" in caplog.text and "could not be read" in caplog.text
    assert ckpt.steps() == [1, 2]
    assert list((tmp_path / "ckpt.corrupt").iterdir())  # moved aside, not deleted
    ckpt.save(3, _state(3.0), {"phase": "rl"})  # the resumed run can save step 3 again
    ckpt.close()
    assert Checkpointer(tmp_path / "ckpt").steps() == [1, 2, 3]


def test_all_checkpoints_unreadable_is_an_error(tmp_path):
    _saved(tmp_path / "ckpt", steps=(1, 2)).close()
    for path in (tmp_path / "ckpt").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="none of the checkpoints"):
        Checkpointer(tmp_path / "ckpt").restore_latest(lambda meta: _state(0.0))


def test_model_mismatch_names_the_tensor_and_does_not_fall_back(tmp_path):
    _saved(tmp_path / "ckpt").close()
    ckpt = Checkpointer(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match=r"tensor 'params.b' with shape \(3,\) float32, but this run's model "
                                              r"needs \(5,\) float32"):
        ckpt.restore_latest(lambda meta: _state(0.0, width=5))
    extra = {**_state(0.0), "value_params": {"v": jnp.zeros(2)}}
    with pytest.raises(CheckpointError, match="has no tensor 'value_params.v'"):
        ckpt.restore_latest(lambda meta: extra)
    assert ckpt.steps() == [1, 2, 3]  # nothing was set aside


def test_half_written_checkpoint_is_never_listed_and_is_cleaned_up(tmp_path):
    _saved(tmp_path / "ckpt", steps=(1,)).close()
    half = tmp_path / "ckpt" / "2.orbax-checkpoint-tmp"
    shutil.copytree(tmp_path / "ckpt" / "1", half)
    (half / "state" / "_METADATA").unlink(missing_ok=True)
    ckpt = Checkpointer(tmp_path / "ckpt")
    assert ckpt.steps() == [1]
    assert ckpt.restore_latest(lambda meta: _state(0.0))[0] == 1
    ckpt.save(2, _state(2.0), {"phase": "rl"})  # orbax removes leftover temporary directories before a save
    ckpt.close()
    assert not half.exists() and Checkpointer(tmp_path / "ckpt").steps() == [1, 2]


def test_best_checkpoint_keeps_the_highest_accuracy(tmp_path):
    best = Checkpointer(tmp_path / "best", max_to_keep=1, best_metric="accuracy")
    for step, accuracy in ((2, 0.3), (4, 0.5), (6, 0.4)):
        best.save(step, _state(float(step)), {"step": step}, metrics={"accuracy": accuracy})
    best.close()
    step, state, _ = Checkpointer(tmp_path / "best", max_to_keep=1, best_metric="accuracy").restore_latest(
        lambda meta: _state(0.0))
    assert step == 4
    _assert_equal(state, _state(4.0))


def test_run_resumes_past_a_corrupted_newest_checkpoint(tmp_path, tmp_path_factory):
    """Through the CLI: the finished run's newest checkpoint (step 8) is damaged; starting the run again
    warns, resumes from step 6 and ends with the same parameters and metrics."""
    reference = reference_run(tmp_path_factory)
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    for path in (workdir / "checkpoints" / "8").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.write_bytes(b"garbage")
    result = train(workdir, cache_dir(tmp_path_factory))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint at step 8" in result.stderr and "could not be read" in result.stderr
    assert "resuming from the checkpoint at step 6" in result.stderr
    assert checkpoint_steps(workdir / "checkpoints") == [4, 6, 8]
    assert_same_state(load_state(workdir / "checkpoints", 8), load_state(reference / "checkpoints", 8))
    assert (workdir / "metrics.jsonl").read_text().count("\n") == (reference / "metrics.jsonl").read_text().count("\n")
