"""The run directory: created if needed, checked for writability and for a config from another run."""
from __future__ import annotations

import json
import os
from pathlib import Path

from jaxrl_self.config import ConfigError, config_to_json

CONFIG_FILE = "config.json"


def prepare_workdir(config, workdir) -> Path:
    """Creates `workdir` and writes the resolved config; refuses a workdir made with another config."""
    workdir = Path(workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the workdir {workdir}: {error.strerror}") from error
    if not os.access(workdir, os.W_OK):
        raise ConfigError(f"the workdir {workdir} is not writable")
    resolved = config_to_json(config)
    path = workdir / CONFIG_FILE
    if path.exists():
        existing = json.loads(path.read_text())
        if existing != json.loads(resolved):
            changed = sorted(_differences(existing, json.loads(resolved)))
            raise ConfigError(f"the workdir {workdir} holds a run made with a different config (differs at: "
                              f"{', '.join(changed[:8])}); use a new --workdir, or the same config to resume")
    else:
        path.write_text(resolved)
    return workdir


def _differences(a, b, prefix="config"):
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _differences(a.get(key), b.get(key), f"{prefix}.{key}")
    elif a != b:
        yield prefix
