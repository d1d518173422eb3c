"""Checkpoints: an orbax CheckpointManager holding the train state pytree and a JSON of run metadata.

A checkpoint at step N holds two items:

- `state`: the `TrainState` pytree (policy params, optimizer state, reference params, step, key);
- `meta`: JSON with everything else a run needs to continue exactly: the phase ("sft"/"rl") and
  the step within it, the data iterator position (`PromptIterator.get_state()`), evaluation
  results, the non-finite step counters, the best eval accuracy so far, a copy of the resolved
  config, and `meta["buffers"]` for method buffers (replay pools, JSON-able).

Saves are asynchronous: `save` returns once the arrays are copied to host memory and orbax writes
them in a background thread (the next `save`, `wait` or `close` waits for it). Orbax writes each
step into a temporary directory and renames it when complete, so a half-written checkpoint is
never listed; leftover temporary directories are removed when a Checkpointer is created.

`restore_latest` restores the newest checkpoint. A failed read is first classified
(`is_corruption`):

- corruption (the checkpoint's data is unreadable or inconsistent: undecodable JSON or array
  chunks, missing files, metadata of the wrong structure) is permanent, so the checkpoint is moved
  aside to `<directory>.corrupt/` (one warning line naming the step and the reason) and the
  previous one is used. A read-only Checkpointer (`read_only=True`, used by `eval` and `sample`)
  skips it with a warning instead and never moves anything;
- a transient failure (MemoryError or out-of-memory, an I/O error, a permission or network error,
  an interrupt, or any error that is not about the data) is re-raised and nothing is moved: the
  checkpoint may be intact, and starting again once the cause is gone restores it.

One whose arrays do not fit the run's model (another architecture) is never skipped: that raises
`CheckpointError` naming the tensor, since falling back would silently lose the run.

Partial states: a Checkpointer made with `part=(saved, completed)` writes `saved(state)` and
restores `completed(restored, fresh)` from the fresh state of the phase; the training loop passes
`train.state.CHECKPOINTED_PART`, which leaves a LoRA model's frozen base out (docs/lora.md).

Best checkpoint: a second Checkpointer made with `best_metric="accuracy"` keeps the one
checkpoint with the highest value of that metric (orbax `best_fn`, `best_mode="max"`); the
training loop saves into it whenever held-out accuracy improves (see `jaxrl_self.train.faults`).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import struct
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

from jaxrl_self.errors import ConfigError, exception_chain, naming_path

log = logging.getLogger(__name__)


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used for this run (another model's shapes, or none readable).

    A subclass of ConfigError: the CLI prints it and exits with code 2.
    """


class Checkpointer:
    """Save/restore `(train_state, meta)` pairs under `directory`.

    Keeps the last `max_to_keep` checkpoints, or, with `best_metric`, the `max_to_keep` with the
    highest value of `metrics[best_metric]` passed to `save`.
    """

    def __init__(self, directory: str | Path, max_to_keep: int = 3, best_metric: Optional[str] = None,
                 read_only: bool = False, part: Optional[tuple[Callable, Callable]] = None):
        """`read_only=True` (for `eval`/`sample`): never writes, creates or moves anything under
        `directory`; `save` raises, and `restore_latest` skips a corrupted checkpoint in place.
        part: `(saved, completed)`: `saved(state)` is what is written, `completed(restored, fresh)`
        the state restored from it and the phase's fresh state; default the whole state."""
        self.directory = Path(directory).absolute()
        self.saved, self.completed = part or (lambda state: state, lambda restored, fresh: restored)
        self.best_metric = best_metric
        self.read_only = read_only
        best = {} if best_metric is None or read_only else dict(
            best_fn=lambda metrics: metrics[best_metric], best_mode="max", keep_checkpoints_without_metrics=False)
        # orbax's own read_only option logs a warning on every start; leaving creation, temporary-directory
        # cleanup and pruning off (and refusing `save`) writes nothing just the same
        writable = dict(max_to_keep=max_to_keep, create=True, cleanup_tmp_directories=True)
        if read_only:
            writable = dict(max_to_keep=None, create=False, cleanup_tmp_directories=False)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(enable_async_checkpointing=True, **writable, **best),
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
        )

    def save(self, step: int, state: Any, meta: dict, metrics: Optional[dict] = None) -> None:
        """Starts an asynchronous save of `state` (a pytree) and `meta` (JSON-able) at `step`.

        `metrics` (e.g. {"accuracy": 0.4}) is required when the Checkpointer has a `best_metric`.
        """
        if self.read_only:
            raise RuntimeError(f"cannot save into {self.directory}: this Checkpointer is read-only")
        with naming_path(self.directory):  # a full disk: an OSError naming the checkpoint directory
            self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(self.saved(state)),
                                                            meta=ocp.args.JsonSave(meta)),
                              metrics=metrics, force=True)

    def wait(self) -> None:
        """Blocks until every started save is committed to disk."""
        with naming_path(self.directory):
            self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        """Steps of the committed checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state_for: Callable[[dict], Any]) -> Optional[tuple[int, Any, dict]]:
        """The newest restorable checkpoint as (step, state, meta), or None when there is none.

        `abstract_state_for(meta)` gives the target pytree (arrays or shape/dtype/sharding structs)
        to restore into, since the state's structure can depend on the run's phase in `meta`.
        Corrupted checkpoints newer than the one restored are moved to `<directory>.corrupt/` (left
        in place when read-only), each with one warning line. A transient failure (`is_corruption`
        is False: out of memory, I/O error, interrupt, ...) propagates and moves nothing. Raises
        CheckpointError when a checkpoint's arrays do not match the target, or when there are
        checkpoints but every one of them is corrupted.
        """
        steps = self.steps()
        for step in reversed(steps):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                stored = self.manager.item_metadata(step)["state"]
            except Exception as error:  # corrupted or partial files: fall back to an older checkpoint
                self._skip_corrupted(step, error)
                continue
            fresh = abstract_state_for(meta)
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, self.saved(fresh))
            self._check_matches(step, stored, abstract)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            except Exception as error:  # metadata readable but array data damaged
                self._skip_corrupted(step, error)
                continue
            return step, self.completed(restored["state"], fresh), meta
        if steps:
            where = "left in place" if self.read_only else f"moved to {self._corrupt_dir()}"
            raise CheckpointError(f"none of the checkpoints in {self.directory} (steps {steps}) could be read "
                                  f"(corrupted); they were {where}. Remove the workdir to start the run again")
        return None

    def _skip_corrupted(self, step: int, error: Exception) -> None:
        """Re-raises a transient `error`; sets a corrupted checkpoint aside (skips it when read-only)."""
        if not is_corruption(error):
            raise error
        if self.read_only:
            log.warning("checkpoint at step %d in %s could not be read (corrupted: %s); left it in place (read-only) and "
                        "trying the previous one", step, self.directory, _reason(error))
            return
        self._set_aside(step, error)

    def _check_matches(self, step: int, stored, abstract) -> None:
        """Raises CheckpointError naming the first tensor whose stored shape/dtype differs from `abstract`."""
        stored_leaves = {_path_name(path): leaf for path, leaf in _flatten(stored)}
        wanted = {_path_name(path): leaf for path, leaf in _flatten(abstract)}
        where = f"the checkpoint at step {step} in {self.directory}"
        for name, leaf in wanted.items():
            if name not in stored_leaves:
                raise CheckpointError(f"{where} has no tensor '{name}' that this run's model needs: it was written by "
                                      "a run with another model config; use a new --workdir")
            got = stored_leaves[name]
            if tuple(got.shape) != tuple(leaf.shape) or jax.numpy.dtype(got.dtype) != jax.numpy.dtype(leaf.dtype):
                raise CheckpointError(f"{where} holds tensor '{name}' with shape {tuple(got.shape)} {got.dtype}, but this "
                                      f"run's model needs {tuple(leaf.shape)} {leaf.dtype}: it was written by a run with "
                                      "another model config; use a new --workdir")
        extra = sorted(set(stored_leaves) - set(wanted))
        if extra:
            raise CheckpointError(f"{where} holds tensor '{extra[0]}' that this run's model does not have: it was written "
                                  "by a run with another model config; use a new --workdir")

    def _corrupt_dir(self) -> Path:
        return self.directory.with_name(self.directory.name + ".corrupt")

    def _set_aside(self, step: int, error: Exception) -> None:
        """Moves a corrupted step directory out of the manager's view (so the step can be saved again)."""
        target = self._corrupt_dir() / f"{step}.{time.time_ns()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), str(target))
        self.manager.reload()
        log.warning("checkpoint at step %d in %s could not be read (corrupted: %s); moved it to %s and trying the "
                    "previous one", step, self.directory, _reason(error), target)

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        with naming_path(self.directory):  # closing re-raises a failed save: name the directory there too
            try:
                self.manager.wait_until_finished()
            finally:
                self.manager.close()


# errors whose type says the data read is unreadable or inconsistent: undecodable JSON, msgpack, UTF-8 or
# tensorstore chunks (all ValueError), metadata of the wrong structure (KeyError, IndexError), truncated files
_DATA_ERRORS = (ValueError, LookupError, EOFError, struct.error)
# a missing or garbled file or directory is corruption; any other OSError (EIO, ENOSPC, EACCES, ...) is not
_MISSING_FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
# tensorstore reports every failure as a ValueError "<status code>: ..."; these codes are not about the data
_TRANSIENT_STATUS = re.compile(r"\b(RESOURCE_EXHAUSTED|UNAVAILABLE|DEADLINE_EXCEEDED|CANCELLED|ABORTED|PERMISSION_DENIED|"
                               r"UNAUTHENTICATED|INTERNAL|UNKNOWN|UNIMPLEMENTED):")
# ... and an OS error of the read shows in its message as the errno's text
_TRANSIENT_ERRNO_TEXT = tuple(os.strerror(code) for code in (
    errno.EIO, errno.ENOMEM, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.ESTALE,
    errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.EBUSY, errno.ECONNRESET, errno.ECONNREFUSED, errno.EHOSTUNREACH))
_TRANSIENT_TEXT = ("out of memory", "Out of memory")


def is_corruption(error: BaseException) -> bool:
    """Whether a failed restore means the checkpoint's data is corrupted (permanent), as opposed to
    a transient failure of this attempt that says nothing about the files.

    Transient when anything in the exception's chain (`__cause__`/`__context__`, exception groups)
    is a MemoryError, an interrupt, an OSError other than a missing file or directory, or a
    tensorstore error whose status or OS error text names memory, I/O, permissions or the
    network. Otherwise corruption when something in the chain is a data error (ValueError,
    including JSON/msgpack/tensorstore decode errors, LookupError, EOFError, a missing file).
    Anything else (e.g. RuntimeError, TypeError: not about the data) is transient: re-raising
    costs a restart, moving an intact checkpoint aside would lose the run's progress.
    """
    chain = list(exception_chain(error))
    for link in chain:
        if isinstance(link, (MemoryError, KeyboardInterrupt, SystemExit, InterruptedError)):
            return False
        if isinstance(link, OSError) and not isinstance(link, _MISSING_FILE_ERRORS):
            return False
        if isinstance(link, ValueError) and not isinstance(link, (json.JSONDecodeError, UnicodeError)):
            message = str(link)
            if (_TRANSIENT_STATUS.search(message) or any(text in message for text in _TRANSIENT_ERRNO_TEXT)
                    or any(text in message for text in _TRANSIENT_TEXT)):
                return False
    return any(isinstance(link, _DATA_ERRORS + _MISSING_FILE_ERRORS) for link in chain)


def _reason(error: BaseException) -> str:
    """'ValueError: DATA_LOSS: ...': the error's type and first line, short enough for one log line."""
    lines = str(error).splitlines()
    return f"{type(error).__name__}: {(lines[0] if lines else '')[:300]}"


def _flatten(tree):
    """[(key path, leaf)] of a target (ShapeDtypeStructs) or of stored metadata (ArrayMetadata)."""
    is_leaf = lambda x: isinstance(x, (jax.ShapeDtypeStruct, ocp.metadata.ArrayMetadata))
    return jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]


def _path_name(path) -> str:
    """'params.layers.0.self_attn.q_proj' from a pytree key path (dict keys, attributes, indices)."""
    parts = []
    for key in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
        else:
            parts.append(str(key))
    if parts and parts[-1] == "value":  # an nnx Variable's array: name the variable
        parts.pop()
    return ".".join(parts)
