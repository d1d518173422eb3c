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

`restore_latest` restores the newest checkpoint. One that cannot be read (corrupted or missing
files) is moved aside to `<directory>.corrupt/` with a warning and the previous one is used. One
whose arrays do not fit the run's model (another architecture) is never skipped: that raises
`CheckpointError` naming the tensor, since falling back would silently lose the run.

Best checkpoint: a second Checkpointer made with `best_metric="accuracy"` keeps the one
checkpoint with the highest value of that metric (orbax `best_fn`, `best_mode="max"`); the
training loop saves into it whenever held-out accuracy improves (see `jaxrl_self.train.faults`).
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

from jaxrl_self.config import ConfigError

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

    def __init__(self, directory: str | Path, max_to_keep: int = 3, best_metric: Optional[str] = None):
        self.directory = Path(directory).absolute()
        self.best_metric = best_metric
        best = {} if best_metric is None else dict(best_fn=lambda metrics: metrics[best_metric], best_mode="max",
                                                   keep_checkpoints_without_metrics=False)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True,
                                                 cleanup_tmp_directories=True, **best),
            item_handlers={"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()},
        )

    def save(self, step: int, state: Any, meta: dict, metrics: Optional[dict] = None) -> None:
        """Starts an asynchronous save of `state` (a pytree) and `meta` (JSON-able) at `step`.

        `metrics` (e.g. {"accuracy": 0.4}) is required when the Checkpointer has a `best_metric`.
        """
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                          metrics=metrics, force=True)

    def wait(self) -> None:
        """Blocks until every started save is committed to disk."""
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        """Steps of the committed checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state_for: Callable[[dict], Any]) -> Optional[tuple[int, Any, dict]]:
        """The newest restorable checkpoint as (step, state, meta), or None when there is none.

        `abstract_state_for(meta)` gives the target pytree (arrays or shape/dtype/sharding structs)
        to restore into, since the state's structure can depend on the run's phase in `meta`.
        Unreadable checkpoints newer than the one restored are moved to `<directory>.corrupt/`.
        Raises CheckpointError when a checkpoint's arrays do not match the target, or when there
        are checkpoints but none of them can be read.
        """
        steps = self.steps()
        for step in reversed(steps):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                stored = self.manager.item_metadata(step)["state"]
            except Exception as error:  # corrupted or partial files: fall back to an older checkpoint
                self._set_aside(step, error)
                continue
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state_for(meta))
            self._check_matches(step, stored, abstract)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            except Exception as error:  # metadata readable but array data damaged
                self._set_aside(step, error)
                continue
            return step, restored["state"], meta
        if steps:
            raise CheckpointError(f"none of the checkpoints in {self.directory} (steps {steps}) could be read; they were "
                                  f"moved to {self._corrupt_dir()}. Remove the workdir to start the run again")
        return None

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
        """Moves an unreadable step directory out of the manager's view (so the step can be saved again)."""
        target = self._corrupt_dir() / f"{step}.{time.time_ns()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.directory / str(step)), str(target))
        self.manager.reload()
        log.warning("checkpoint at step %d in %s could not be read (%s: %s); moved it to %s and trying the previous one",
                    step, self.directory, type(error).__name__, str(error).splitlines()[0][:300], target)

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


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
