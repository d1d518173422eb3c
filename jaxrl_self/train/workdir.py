"""The run directory: created if needed, checked for writability and for a config from another run.

`<workdir>/config.json` holds the resolved config of the run (written atomically); starting the
same workdir again with the same config resumes it, with another config is refused, except for
more training steps (`LENGTH_KEYS`: `rl.steps`, or `method.iterations` for the iterative recipes),
which extends the run: it continues from its last checkpoint to the new end, and config.json is
updated to the new length once the run has loaded. Fewer steps are refused. A start checks
the workdir first (`prepare_workdir`) and records its config only once the model and data have
loaded (`claim_workdir`), so a start that fails on a bad model path or data file leaves the
workdir free for the fixed command.

While a run trains, it holds `<workdir>/.lock` (`hold_workdir_lock`): an advisory `flock` taken
before the run writes anything and held until it ends. A second run started on the same workdir
fails with a ConfigError (exit 2) naming the holder's PID and host. The kernel drops the lock when
its process dies, even by SIGKILL, so the file a killed run leaves behind never blocks a resume.
In a multi-process run every process locks its own file (`.lock` for process 0, `.lock.<i>` for
process i), so the processes of one run do not block each other while a second run's processes
each find theirs held. `eval` and `sample` only read, and take no lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from jaxrl_self.config import ConfigError, config_to_json, with_new_defaults
from jaxrl_self.metrics import write_atomically

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"  # held by the training run of the workdir (`.lock.<i>` by process i > 0)
CHECKPOINT_DIR = "checkpoints"  # the last checkpoint.max_to_keep steps
BEST_CHECKPOINT_DIR = "best_checkpoint"  # the step with the best held-out accuracy
# every process of a multi-process run passes its own process id; the rest of the config must match
PER_PROCESS_KEYS = frozenset({"config.distributed.process_id"})
# the training length (`Recipe.num_steps`: RL recipes read rl.steps, the iterative ones method.iterations):
# a restart may raise it to extend a run, never lower it
LENGTH_KEYS = ("rl.steps", "method.iterations")


def prepare_workdir(config, workdir) -> Path:
    """Creates `workdir` and checks it; refuses a workdir made with another config. Writes no file:
    `claim_workdir` records the config once the run's model and data have loaded.

    A config that asks for more training steps (a larger value at one of `LENGTH_KEYS`) extends
    the run; with `rl.lr_schedule = "cosine"` that logs a warning, since the decay of the steps
    still to come then follows the new length (a run started with it would differ).

    Raises ConfigError when the directory cannot be created or written, when its config.json
    cannot be read, when that config differs from `config` (naming the differing keys) other than
    in `config.distributed.process_id` (the processes of one run share the workdir) and in a
    larger training length, or when `config` asks for fewer training steps than the run's.
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
            existing = with_new_defaults(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read {path} ({error}); fix or remove it, or use a new --workdir") from error
        wanted = json.loads(resolved)
        lengths = _length_changes(existing, wanted)
        changed = sorted(set(_differences(existing, wanted)) - PER_PROCESS_KEYS - {f"config.{key}" for key in lengths})
        if changed:
            raise ConfigError(f"the workdir {workdir} holds a run made with a different config (differs at: "
                              f"{', '.join(changed[:8])}); use a new --workdir, the same config to resume, or the same "
                              f"config with more steps ({' or '.join(LENGTH_KEYS)}) to extend it")
        for key, (old, new) in lengths.items():
            if new < old:
                raise ConfigError(f"config.{key} = {new} is fewer than the {old} of the run in {workdir}: a run can be "
                                  f"extended, not shortened; use a new --workdir, or evaluate a checkpoint of this one")
            log.info("extending the run in %s: config.%s %d -> %d", workdir, key, old, new)
            if key == "rl.steps" and config.rl.get("lr_schedule", "cosine") == "cosine":
                log.warning("rl.lr_schedule is 'cosine': the learning rate of the remaining steps decays over the new "
                            "rl.steps = %d, so this run will not equal one started with it (rl.lr_schedule = 'constant' "
                            "makes extending exact: docs/runs.md)", new)
    return workdir


def _length_changes(existing: dict, wanted: dict) -> dict[str, tuple[int, int]]:
    """{key: (old, new)} for the `LENGTH_KEYS` whose integer value differs between two config JSONs."""
    changes = {}
    for key in LENGTH_KEYS:
        old, new = _get(existing, key), _get(wanted, key)
        if isinstance(old, int) and isinstance(new, int) and old != new:
            changes[key] = (old, new)
    return changes


def _get(tree: dict, dotted_key: str):
    """The value at "a.b" in a JSON tree, or None."""
    for part in dotted_key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def lock_path(workdir, process_index: int = 0) -> Path:
    """The lock file of process `process_index` of the run in `workdir`."""
    return Path(workdir) / (LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.{process_index}")


@contextlib.contextmanager
def hold_workdir_lock(workdir, process_index: int = 0) -> Iterator[Path]:
    """Holds the advisory lock of `workdir` (for process `process_index` of its run) for the `with` block.

    Writes this process's PID and host into the lock file. Raises ConfigError, naming the holder's
    PID and host, when another live process holds it. A lock file left by a process that died
    (even by SIGKILL) does not block: the kernel released its `flock`. On a filesystem without
    `flock` support the run goes on unlocked, with a warning.
    """
    path = lock_path(workdir, process_index)
    try:
        # os.open makes the descriptor non-inheritable: the run's subprocesses do not keep the lock alive
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ConfigError(f"cannot create the lock file {path}: {error.strerror or error}") from error
    try:
        locked = _try_lock(descriptor, path, workdir)
        if locked:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode() + b"\n", 0)
        try:
            yield path
        finally:
            if locked:
                os.ftruncate(descriptor, 0)  # the lock file of a finished run names nobody
    finally:
        os.close(descriptor)  # releases the lock


def _try_lock(descriptor: int, path: Path, workdir) -> bool:
    """Takes the lock of the open lock file: True, or False where the filesystem has no `flock`;
    raises ConfigError naming the holder when another process holds it."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    except OSError as error:
        log.warning("cannot lock %s (%s); running without a workdir lock: make sure no other run uses %s",
                    path, error.strerror or error, workdir)
        return False
    raise ConfigError(f"the workdir {workdir} is in use by another run ({_describe_holder(descriptor)}, which holds "
                      f"{path}); wait for it to end or stop it, or use a new --workdir")


def _describe_holder(descriptor: int) -> str:
    """'PID 123 on host h' from a held lock file (written by its holder right after it took the lock)."""
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0).decode())
        return f"PID {holder['pid']} on host {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written it yet
        return "PID unknown: the holder is just starting"


def claim_workdir(config, workdir: Path) -> None:
    """Records `config` as the run of `workdir` (checked by `prepare_workdir`), unless it already
    is; an extended run's config.json gets its new length (`LENGTH_KEYS`), the rest kept as it is."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        write_atomically(path, config_to_json(config))
        return
    existing = json.loads(path.read_text())
    lengths = _length_changes(existing, json.loads(config_to_json(config)))
    if lengths:
        for key, (_, new) in lengths.items():
            *parents, name = key.split(".")
            section = existing
            for part in parents:
                section = section[part]
            section[name] = new
        write_atomically(path, json.dumps(existing, indent=2, sort_keys=True))


def _differences(a, b, prefix="config"):
    """Dotted keys at which two JSON trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            yield from _differences(a.get(key), b.get(key), f"{prefix}.{key}")
    elif a != b:
        yield prefix
