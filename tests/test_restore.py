"""Restore tells corruption from transient failure: a transient error (out of memory, I/O error,
interrupt, any error not about the data) propagates and leaves every checkpoint in place; only
corrupted data moves a checkpoint aside, with one warning line; a read-only Checkpointer (`eval`,
`sample`) skips a corrupted checkpoint but never moves it."""
import errno
import json
import logging
import shutil

import jax
import jax.numpy as jnp
import pytest

from jaxrl_self.checkpoint import CheckpointError, Checkpointer, is_corruption
from tiny_job import checkpoint_steps, reference_run


def _state(scale: float):
    return {"params": {"w": jnp.full((4, 3), scale, jnp.float32)}, "step": jnp.int32(int(scale))}


def _saved(directory, steps=(1, 2, 3)) -> None:
    ckpt = Checkpointer(directory)
    for step in steps:
        ckpt.save(step, _state(float(step)), {"phase": "rl", "rl_step": step})
    ckpt.close()


def _corrupt_arrays(step_dir) -> None:
    """Garbage in the array data files (ocdbt `d/` chunks), as a crash or bad disk would leave them."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files
    for path in files:
        path.write_bytes(b"\x00garbage" * 3)


TRANSIENT = [MemoryError("cannot allocate"), OSError(errno.EIO, "Input/output error"),
             ValueError('RESOURCE_EXHAUSTED: Error reading "params.w": out of memory'),
             ValueError('FAILED_PRECONDITION: Error reading local file "x" [OS error 5: Input/output error]'),
             RuntimeError("some bug, not the data"), KeyboardInterrupt()]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__ + str(e)[:12])
@pytest.mark.parametrize("call", [0, 1], ids=["meta", "state"])
def test_transient_restore_error_leaves_every_checkpoint_in_place(tmp_path, monkeypatch, caplog, error, call):
    _saved(tmp_path / "ckpt")
    ckpt = Checkpointer(tmp_path / "ckpt")
    calls = []
    real = ckpt.manager.restore

    def failing(*args, **kwargs):  # the `call`-th restore of the newest step fails
        calls.append(args)
        if len(calls) - 1 == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt.manager, "restore", failing)
    with caplog.at_level(logging.WARNING, logger="jaxrl_self.checkpoint"), pytest.raises(type(error)):
        ckpt.restore_latest(lambda meta: _state(0.0))
    assert ckpt.steps() == [1, 2, 3] and checkpoint_steps(tmp_path / "ckpt") == [1, 2, 3]
    assert not (tmp_path / "ckpt.corrupt").exists() and "could not be read" not in caplog.text
    ckpt.close()
    assert Checkpointer(tmp_path / "ckpt").restore_latest(lambda meta: _state(0.0))[0] == 3  # intact once it passes


def test_corruption_is_set_aside_with_one_line_naming_step_and_reason(tmp_path, caplog):
    _saved(tmp_path / "ckpt")
    _corrupt_arrays(tmp_path / "ckpt" / "3")
    with caplog.at_level(logging.WARNING, logger="jaxrl_self.checkpoint"):
        assert Checkpointer(tmp_path / "ckpt").restore_latest(lambda meta: _state(0.0))[0] == 2
    [record] = [r for r in caplog.records if r.name == "jaxrl_self.checkpoint"]
    message = record.getMessage()
    assert "\n" not in message and "checkpoint at step 3" in message and "corrupted: ValueError" in message
    assert checkpoint_steps(tmp_path / "ckpt") == [1, 2] and len(list((tmp_path / "ckpt.corrupt").iterdir())) == 1


def test_read_only_skips_a_corrupted_checkpoint_without_moving_it(tmp_path, caplog):
    _saved(tmp_path / "ckpt")
    _corrupt_arrays(tmp_path / "ckpt" / "3")
    (tmp_path / "ckpt" / "2" / "meta" / "metadata").write_text("{not json")
    before = sorted(str(p) for p in (tmp_path / "ckpt").rglob("*"))
    ckpt = Checkpointer(tmp_path / "ckpt", read_only=True)
    with caplog.at_level(logging.WARNING, logger="jaxrl_self.checkpoint"):
        step, _, meta = ckpt.restore_latest(lambda meta: _state(0.0))
    assert (step, meta["rl_step"]) == (1, 1)
    assert caplog.text.count("left it in place") == 2 and "step 3" in caplog.text and "step 2" in caplog.text
    with pytest.raises(RuntimeError, match="read-only"):
        ckpt.save(4, _state(4.0), {"phase": "rl"})
    ckpt.close()
    assert sorted(str(p) for p in (tmp_path / "ckpt").rglob("*")) == before
    assert not (tmp_path / "ckpt.corrupt").exists()
    _corrupt_arrays(tmp_path / "ckpt" / "1")
    with pytest.raises(CheckpointError, match="none of the checkpoints .* left in place"):
        Checkpointer(tmp_path / "ckpt", read_only=True).restore_latest(lambda meta: _state(0.0))
    assert checkpoint_steps(tmp_path / "ckpt") == [1, 2, 3]
    assert Checkpointer(tmp_path / "absent", read_only=True).restore_latest(lambda meta: _state(0.0)) is None
    assert not (tmp_path / "absent").exists()  # read-only creates nothing


def test_is_corruption():
    def chained(outer, inner):
        try:
            try:
                raise inner
            except BaseException as error:
                raise outer from error
        except BaseException as error:
            return error

    corrupt = [ValueError('DATA_LOSS: Error decoding manifest'), ValueError("OUT_OF_RANGE: byte range not valid"),
               json.JSONDecodeError("Expecting value", "", 0), FileNotFoundError("File x not found."),
               KeyError("tree_metadata"), ValueError('NOT_FOUND: Error reading "d/x" [OS error: No such file or directory]')]
    transient = TRANSIENT + [chained(ValueError("restore failed"), MemoryError()), OSError(errno.ENOSPC, "No space"),
                             PermissionError(errno.EACCES, "Permission denied"), TypeError("a bug")]
    assert [is_corruption(e) for e in corrupt] == [True] * len(corrupt)
    assert [is_corruption(e) for e in transient] == [False] * len(transient)


def test_eval_never_moves_a_checkpoint(tmp_path, tmp_path_factory):
    """`load_run` (what `jaxrl-self eval` and `sample` restore with) skips a corrupted newest checkpoint
    and evaluates the previous one, leaving the damaged one where it is for the run to deal with."""
    from jaxrl_self.recipes.runs import load_run

    workdir = tmp_path / "run"
    shutil.copytree(reference_run(tmp_path_factory), workdir)
    _corrupt_arrays(workdir / "checkpoints" / "8")
    before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    run, params = load_run(workdir, "latest")
    assert jax.tree.leaves(params)
    assert checkpoint_steps(workdir / "checkpoints") == [4, 6, 8]
    assert not (workdir / "checkpoints.corrupt").exists()
    assert sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")) == before
