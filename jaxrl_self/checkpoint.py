"""Checkpoints: an orbax CheckpointManager holding the train state pytree and a JSON of run metadata
(phase, data iterator position, evaluation results, method buffers).

Orbax writes each step into a temporary directory and renames it when complete, so a
half-written checkpoint is never listed; a checkpoint that fails to restore (corrupted files) is
skipped with a warning and the previous one is used.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class Checkpointer:
    """Save/restore `(train_state, meta)` pairs under `directory`, keeping the last `max_to_keep`."""

    def __init__(self, directory: str | Path, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True),
        )

    def save(self, step: int, state: Any, meta: dict) -> None:
        """Starts an asynchronous save of `state` (a pytree) and `meta` (JSON-able) at `step`."""
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, abstract_state_for: Callable[[dict], Any]) -> Optional[tuple[int, Any, dict]]:
        """The newest restorable checkpoint as (step, state, meta), or None when there is none.

        abstract_state_for(meta) gives the target pytree (shapes/dtypes/shardings) to restore into,
        since the state's structure can depend on the run's phase recorded in `meta`.
        """
        for step in reversed(self.steps()):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
                abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state_for(meta))
                restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
                return step, restored["state"], meta
            except Exception as error:  # corrupted or partial files: fall back to an older checkpoint
                log.warning("checkpoint at step %d in %s could not be restored (%s: %s); trying the previous one",
                            step, self.directory, type(error).__name__, error)
        return None

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
