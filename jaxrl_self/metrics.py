"""Training metrics: a JSONL + TensorBoard (+ optional W&B) writer and a progress bar (the run
report that reads them back is `jaxrl_self.report`).

`<workdir>/metrics.jsonl` holds one JSON object per logged step, ``{"step": 10, "kl": 0.01, ...}``.
JSON has no NaN or infinity, so non-finite floats are written as the strings "nan", "inf" and
"-inf"; `read_metrics` turns them back into floats. This is the one module of the library that
writes to the terminal (the progress bar).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tqdm

from jaxrl_self.errors import naming_path

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"

logger = logging.getLogger(__name__)

_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _json_float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _json_value(key: str, value: Any) -> int | float | str | list:
    """A metric value as JSON: ints stay ints, one-element arrays become scalars, other arrays
    become (nested) lists; non-finite floats become strings (see module docstring)."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_float(float(value))
    array = np.asarray(value)  # also fetches a jax.Array from its device
    if array.dtype.kind not in "biuf":
        raise TypeError(f"metric {key!r} has a non-numeric value of type {type(value).__name__}")
    if array.size == 1:
        return _json_value(key, array.reshape(()).item())
    return np.vectorize(_json_float, otypes=[object])(array.astype(np.float64)).tolist()


class MetricsWriter:
    """Writes metrics per step to `<workdir>/metrics.jsonl`, TensorBoard and (optionally) W&B.

    Only the main process (`is_main_process`, i.e. process 0) writes; elsewhere every call is a
    no-op. With `resume_step`, rows after that step are first cut from metrics.jsonl (see
    `truncate_metrics`) and TensorBoard is told to purge its events after that step.
    W&B is used only when `use_wandb` is set and `wandb` can be imported (a warning otherwise).
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        use_tensorboard: bool = True,
        use_wandb: bool = False,
        is_main_process: bool = True,
        resume_step: int | None = None,
        wandb_project: str = "jaxrl_self",
    ):
        self.workdir = Path(workdir)
        self.enabled = is_main_process
        self._jsonl = None
        self._tensorboard = None
        self._wandb_run = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            truncate_metrics(self.workdir / METRICS_FILE, resume_step)
        metrics_path = self.workdir / METRICS_FILE
        ends_mid_line = metrics_path.exists() and metrics_path.read_bytes()[-1:] not in (b"", b"\n")
        # Held open for the writer's lifetime and closed in close().
        self._jsonl = open(metrics_path, "a", encoding="utf-8")  # noqa: SIM115
        if ends_mid_line:  # a crash cut the last row short: keep it apart from the new rows
            self._jsonl.write("\n")
        if use_tensorboard:
            from tensorboardX import SummaryWriter

            purge_step = None if resume_step is None else resume_step + 1
            self._tensorboard = SummaryWriter(logdir=str(self.workdir / TENSORBOARD_DIR), purge_step=purge_step)
        if use_wandb:
            try:
                import wandb
            except ImportError:
                logger.warning("use_wandb is set but wandb is not installed; logging without W&B")
            else:
                self._wandb_run = wandb.init(project=wandb_project, dir=str(self.workdir), resume="allow")

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Logs `metrics` (name -> number, NumPy array or jax.Array) for `step`; flushed at once.

        One-element arrays are logged as scalars; larger arrays go to JSONL as lists and to
        TensorBoard as histograms. Raises TypeError for a value that is not numeric.
        """
        if not self.enabled:
            return
        row = {"step": int(step)}
        for key, value in metrics.items():
            row[key] = _json_value(key, value)
        with naming_path(self._jsonl.name):  # a full disk: an OSError naming metrics.jsonl
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if self._tensorboard is not None:
            for key, value in row.items():
                if key == "step":
                    continue
                if isinstance(value, list):
                    self._tensorboard.add_histogram(key, np.asarray(metrics[key], np.float64), int(step))
                else:
                    self._tensorboard.add_scalar(key, _NON_FINITE.get(value, value), int(step))
            self._tensorboard.flush()
        if self._wandb_run is not None:
            scalars = {k: _NON_FINITE.get(v, v) for k, v in row.items() if k != "step" and not isinstance(v, list)}
            self._wandb_run.log(scalars, step=int(step))

    def close(self) -> None:
        """Flushes and closes every sink."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> MetricsWriter:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _decode_row(row: dict) -> dict:
    return {key: _NON_FINITE.get(value, value) if isinstance(value, str) else value for key, value in row.items()}


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl file, in order; "nan"/"inf"/"-inf" strings become floats.

    A line that is not a JSON object (a row cut short by a crash) is skipped with a warning
    giving its 1-based line number.
    """
    rows = []
    for line_number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            logger.warning("%s:%d: skipping a line that is not a JSON object", path, line_number)
            continue
        rows.append(_decode_row(row))
    return rows


def truncate_metrics(path: str | os.PathLike, max_step: int) -> int:
    """Removes rows with step > `max_step` (and unreadable lines) from a metrics.jsonl file.

    Atomic: the kept rows go to a temporary file in the same directory that then replaces the
    original, so a crash leaves either the old or the new file. A missing file is left missing.
    Returns the number of lines removed.
    """
    path = Path(path)
    if not path.exists():
        return 0
    kept, removed = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            step = None
        if step is not None and step <= max_step:
            kept.append(line + "\n")
        else:
            removed += 1
    write_atomically(path, "".join(kept))
    return removed


def write_atomically(path: Path, text: str) -> None:
    """Writes `text` to a temporary file next to `path` and renames it: a crash leaves no half file;
    a full disk raises an OSError naming `path`."""
    with naming_path(path):
        file_descriptor, temporary_path = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(file_descriptor, "w", encoding="utf-8") as temporary:
                temporary.write(text)
                temporary.flush()
                os.fsync(temporary.fileno())
            os.replace(temporary_path, path)
        except BaseException:
            os.unlink(temporary_path)
            raise


class ProgressBar:
    """A tqdm progress bar on stderr with scalar postfixes (reward, accuracy, ...) and ETA.

    When stderr is not a terminal (a log file, a cluster job), the bar is off and a line is
    logged through `logging` at every ~10% of `total` instead.
    """

    def __init__(self, total: int, desc: str, initial: int = 0):
        self.total = total
        self.desc = desc
        self.count = initial
        self._interactive = sys.stderr.isatty()
        self._bar = tqdm.tqdm(total=total, desc=desc, initial=initial, file=sys.stderr, dynamic_ncols=True,
                              disable=not self._interactive)
        self._start_time = time.monotonic()
        self._start_count = initial
        self._next_log_tenth = self._tenth_after(initial)

    def _tenth_after(self, count: int) -> int:
        """The next multiple of 10% of `total` (counted in tenths) above `count`; 11 = done."""
        return 10 * count // max(self.total, 1) + 1

    def update(self, n: int = 1, **postfix_scalars: float) -> None:
        """Advances by `n` steps and shows the given scalars, e.g. ``update(reward=0.4, acc=0.3)``."""
        self.count += n
        postfix = {key: f"{float(value):.4g}" for key, value in postfix_scalars.items()}
        if self._interactive:
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(n)
            return
        if self._next_log_tenth <= 10 and 10 * self.count >= self._next_log_tenth * self.total:
            elapsed = time.monotonic() - self._start_time
            done = self.count - self._start_count
            eta = elapsed / done * (self.total - self.count) if done > 0 else math.nan
            details = " ".join(f"{key}={value}" for key, value in postfix.items())
            logger.info("%s: %d/%d (%.0f%%) elapsed %.0fs eta %.0fs %s", self.desc, self.count, self.total,
                         100 * self.count / max(self.total, 1), elapsed, eta, details)
            self._next_log_tenth = self._tenth_after(self.count)

    def close(self) -> None:
        """Closes the bar (leaves the last state on the terminal)."""
        self._bar.close()
