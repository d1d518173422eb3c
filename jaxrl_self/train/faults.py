"""Fault tolerance for the training loops: checkpoint cadence, preemption, non-finite steps.

The SFT and RL loops hand every finished step to one `RunControl`:

- `observe(step, metrics)` counts steps whose update the NaN/Inf guard skipped (`apply_gradients`
  reports `skipped_nonfinite` > 0) and returns the cumulative `skipped_nonfinite_total` metric;
- `save(step, state, meta, due, accuracy)` saves a checkpoint when one is due, when a stop signal
  arrived, or when `config.faults.max_consecutive_nonfinite` steps in a row were skipped; saves
  into the best checkpoint when held-out accuracy improved; and then stops the run by raising
  `Preempted` or `NonFiniteStop` after the checkpoint is on disk.

SIGTERM and SIGINT (a TPU VM preemption notice, Ctrl-C) only set a flag (`StopSignal`); the step in
flight finishes, its checkpoint is written and waited for, and `Preempted` carries the step out to
the CLI, which prints the command that resumes the run. A second signal interrupts at once
(KeyboardInterrupt; a checkpoint being written then is never loaded).

Exit codes of `jaxrl-self train` (cli.py): 0 finished, 2 a problem a person must fix (config,
data, checkpoint), 3 `NonFiniteStop`, 75 `Preempted` (EX_TEMPFAIL: rerun the same command).

Test hooks, not for production use:

- `JAXRL_SELF_TEST_NAN_AT=5,7,8` (environment): RL steps (global numbering) at which `inject_nan`
  multiplies the batch's advantages by NaN, so that the loss and gradient are NaN and the guard
  must skip the update.
- `JAXRL_SELF_TEST_KILL_AT=<event>:<step>` (environment): `kill_point` sends SIGKILL to the process
  at that point, to test resuming after a crash. Events: "mid_step" (the step's update and
  metrics row are done, its checkpoint not started), "mid_save" (the checkpoint's asynchronous
  write has started but is not committed), "after_save" (the checkpoint is committed).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Optional

import numpy as np

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import NAN_TEST_HOOK
from jaxrl_self.train.batch import RolloutBatch

log = logging.getLogger(__name__)

KILL_ENV = "JAXRL_SELF_TEST_KILL_AT"  # test hook: SIGKILL at "<event>:<step>" (`kill_point`)
EXIT_NONFINITE = 3
EXIT_PREEMPTED = 75


def describe_step(step: int, sft_steps: int) -> str:
    """A global step (as checkpoints and metrics.jsonl count them: SFT steps first) for messages:
    "step 105 (training step 5 after 100 SFT steps)"."""
    if step <= sft_steps:
        return f"step {step} (SFT step {step} of {sft_steps})"
    return f"step {step} (training step {step - sft_steps} after {sft_steps} SFT steps)" if sft_steps else f"step {step}"


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint at global `step` (`where` describes it)."""

    def __init__(self, signal_name: str, step: int, where: str):
        super().__init__(f"received {signal_name}; saved a checkpoint at {where}")
        self.signal_name, self.step = signal_name, step


class NonFiniteStop(Exception):
    """`count` steps in a row had a non-finite loss or gradient; a checkpoint was saved at global
    `step` (`where` describes it)."""

    def __init__(self, step: int, count: int, total: int, where: str):
        super().__init__(f"stopped at {where}: {count} steps in a row had a non-finite loss or gradient "
                         f"({total} skipped in all); saved a checkpoint there. Check metrics.jsonl "
                         "(skipped_nonfinite, grad_norm) and lower the learning rate or fix the data, in a new --workdir")
        self.step, self.count, self.total = step, count, total


class StopSignal:
    """Context manager: SIGTERM/SIGINT set `received` (the signal's name) instead of ending the process.

    A second signal raises KeyboardInterrupt. Previous handlers come back on exit. Handlers can be
    installed only in the main thread; elsewhere signals keep their usual effect.
    """

    def __init__(self):
        self.received: Optional[str] = None
        self._previous = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second stop signal ({signal.Signals(number).name})")
        self.received = signal.Signals(number).name
        log.warning("received %s: finishing the current step, saving a checkpoint, then stopping "
                    "(send it again to stop at once)", self.received)

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


def kill_point(event: str, step: int, ckpt: Optional[Checkpointer] = None) -> None:
    """Test hook: SIGKILLs this process when `JAXRL_SELF_TEST_KILL_AT` is "<event>:<step>".

    "after_save" first waits for `ckpt`'s pending save to be committed.
    """
    if os.environ.get(KILL_ENV) != f"{event}:{step}":
        return
    if event == "after_save":
        ckpt.wait()
    os.kill(os.getpid(), signal.SIGKILL)


class RunControl:
    """Checkpoint cadence, best checkpoint, stop signals and non-finite counters of one run.

    `meta` is the restored checkpoint's metadata (or the fresh run's): the counters and the best
    accuracy so far continue from it, so a resumed run makes the same decisions as an
    uninterrupted one.
    """

    def __init__(self, faults_config, meta: dict, ckpt: Checkpointer, best: Checkpointer, stop_signal: StopSignal,
                 sft_steps: int = 0):
        self.sft_steps = sft_steps  # for messages: global steps count the SFT steps first
        self.max_consecutive = faults_config.max_consecutive_nonfinite
        self.inject_at = frozenset(int(step) for step in os.environ.get(NAN_TEST_HOOK, "").split(",") if step.strip())
        counters = meta.get("nonfinite", {})
        self.total, self.consecutive = counters.get("total", 0), counters.get("consecutive", 0)
        self.best_accuracy = meta.get("best_accuracy")
        self.ckpt, self.best, self.stop_signal = ckpt, best, stop_signal

    def inject_nan(self, step: int, batch: RolloutBatch) -> RolloutBatch:
        """Test hook: `batch` with its advantages times NaN at the global steps the environment variable
        `JAXRL_SELF_TEST_NAN_AT` lists ("5,7,8")."""
        if step not in self.inject_at:
            return batch
        return batch.replace(advantages=batch.advantages * float("nan"))

    def observe(self, step: int, metrics: dict) -> dict:
        """Counts a skipped update (`metrics["skipped_nonfinite"]` > 0) and returns the cumulative metric."""
        if float(np.asarray(metrics["skipped_nonfinite"])) > 0:
            self.total += 1
            self.consecutive += 1
            log.warning("%s: non-finite loss or gradient, update skipped (%d in a row, %d in all)",
                        describe_step(step, self.sft_steps), self.consecutive, self.total)
        else:
            self.consecutive = 0
        return {"skipped_nonfinite_total": self.total}

    def save(self, step: int, state: Any, meta: dict, due: bool, accuracy: Optional[float] = None) -> None:
        """Called once after every step with the state and metadata a checkpoint at `step` would hold.

        Saves when `due`, and always before stopping; saves into the best checkpoint when
        `accuracy` (held-out, evaluated at this step) beats the best so far. Raises NonFiniteStop
        or Preempted, after the checkpoint is committed, when the run must stop.
        """
        kill_point("mid_step", step)
        if accuracy is not None and (self.best_accuracy is None or accuracy > self.best_accuracy):
            self.best_accuracy = accuracy
            if step not in self.best.steps():  # a replay after a crash may find it already saved
                self.best.save(step, state, self._with_counters(meta), metrics={"accuracy": accuracy})
        diverged = self.consecutive >= self.max_consecutive
        if due or diverged or self.stop_signal.received:
            # The checkpoint's metadata records best_accuracy, so a resumed run never re-saves that
            # best step: the best checkpoint must be committed before this one can be.
            self.best.wait()
            self.ckpt.save(step, state, self._with_counters(meta))
            kill_point("mid_save", step)
            kill_point("after_save", step, self.ckpt)
        if diverged or self.stop_signal.received:
            self.ckpt.wait()
            self.best.wait()
            if diverged:
                raise NonFiniteStop(step, self.consecutive, self.total, describe_step(step, self.sft_steps))
            raise Preempted(self.stop_signal.received, step, describe_step(step, self.sft_steps))

    def _with_counters(self, meta: dict) -> dict:
        return {**meta, "nonfinite": {"total": self.total, "consecutive": self.consecutive},
                "best_accuracy": self.best_accuracy}
