"""The run directory: created if needed, checked for writability and for a config from another run.

`<workdir>/config.json` holds the resolved config of the run (written atomically); starting the
same workdir again with the same config resumes it, with another config is refused. A start checks
the workdir first (`prepare_workdir`) and records its config only once the model and data have
loaded (`claim_workdir`), so a start that fails on a bad model path or data file leaves the
workdir free for the fixed command.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from jaxrl_self.config import ConfigError, config_to_json

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"  # the last checkpoint.max_to_keep steps
BEST_CHECKPOINT_DIR = "best_checkpoint"  # the step with the best held-out accuracy
# every process of a multi-process run passes its own process id; the rest of the config must match
PER_PROCESS_KEYS = frozenset({"config.distributed.process_id"})


def prepare_workdir(config, workdir) -> Path:
    """Creates `workdir` and checks it; refuses a workdir made with another config. Writes no file:
    `claim_workdir` records the config once the run's model and data have loaded.

    Raises ConfigError when the directory cannot be created or written, when its config.json
    cannot be read, or when that config differs from `config` (naming the differing keys) other
    than in `config.distributed.process_id` (the processes of one run share the workdir).
    """
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):  # os.access says yes to root even on read-only mounts
            pass
    except OSError as error:
        raise ConfigError(f"the workdir {workdir} cannot be created or written: {error.strerror or error}") from error
    resolved = config_to_json(config)
    path = workdir / CONFIG_FILE
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {path} ({error}); fix or remove it, or use a new --workdir") from error
        changed = sorted(set(_differences(existing, json.loads(resolved))) - PER_PROCESS_KEYS)
        if changed:
            raise ConfigError(f"the workdir {workdir} holds a run made with a different config (differs at: "
                              f"{', '.join(changed[:8])}); use a new --workdir, or the same config to resume")
    return workdir


def claim_workdir(config, workdir: Path) -> None:
    """Records `config` as the run of `workdir` (checked by `prepare_workdir`), unless it already is."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        _write_atomically(path, config_to_json(config))


def _write_atomically(path: Path, text: str) -> None:
    """Writes `text` to a temporary file next to `path` and renames it: a crash leaves no half file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _differences(a, b, prefix="config"):
    """Dotted keys at which two JSON trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _differences(a.get(key), b.get(key), f"{prefix}.{key}")
    elif a != b:
        yield prefix
