"""A tiny version of the default job, run through the CLI in a subprocess, for the checkpoint,
resume and CLI tests.

All runs share one JAX persistent compilation cache, kept next to pytest's per-session temporary
directories so that later sessions reuse it: only the first run ever compiles (~30 s of CPU on 2
cores); later ones take ~10-15 s, most of it importing JAX. The reference (uninterrupted) run is
made once per session and shared by the test files that compare with it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SFT_STEPS, RL_STEPS = 4, 4  # global steps 1..4 are SFT, 5..8 RL; checkpoints every 2 steps
TINY = [
    "--config.task.digits=1", "--config.task.test_size=16",
    "--config.model.hidden_size=32", "--config.model.num_layers=1", "--config.model.num_heads=2",
    "--config.model.num_kv_heads=1", "--config.model.head_dim=16", "--config.model.intermediate_size=64",
    "--config.model.max_position_embeddings=64",
    f"--config.sft.steps={SFT_STEPS}", "--config.sft.batch_size=8", "--config.sft.warmup_steps=0",
    f"--config.rl.steps={RL_STEPS}", "--config.rl.prompts_per_step=4", "--config.rl.group_size=2",
    "--config.rl.max_new_tokens=16",
    "--config.eval.num_examples=8", "--config.eval.batch_size=8", "--config.eval.every=2",
    "--config.checkpoint.every=2", "--config.log_every=1", "--config.mesh.num_devices=1",
]
WALL_TIME_KEYS = ("time/step_s",)  # differ between any two runs; left out of comparisons
_reference: dict[str, Path] = {}


def compilation_cache_env(cache_dir: Path) -> dict[str, str]:
    """Environment settings that make JAX keep every compiled function in `cache_dir`."""
    return {"JAX_COMPILATION_CACHE_DIR": str(cache_dir), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def train_command(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jaxrl_self.cli", "train", "--workdir", str(workdir), *TINY, *extra]


def child_env(cache_dir: Path, kill_at: str | None = None, nan_at: str | None = None) -> dict[str, str]:
    env = {**os.environ, **compilation_cache_env(cache_dir)}
    for name, value in (("JAXRL_SELF_TEST_KILL_AT", kill_at), ("JAXRL_SELF_TEST_NAN_AT", nan_at)):
        env.pop(name, None)
        if value:
            env[name] = value
    return env


def train(workdir: Path, cache_dir: Path, *extra: str, kill_at: str | None = None,
          nan_at: str | None = None) -> subprocess.CompletedProcess:
    """Runs `jaxrl-self train` on the tiny job; `kill_at` sets the SIGKILL test hook ("<event>:<step>"),
    `nan_at` the NaN-loss test hook ("5,7": global steps)."""
    started = time.monotonic()
    result = subprocess.run(train_command(workdir, *extra), cwd=REPO, env=child_env(cache_dir, kill_at, nan_at),
                            capture_output=True, text=True, timeout=600)
    print(f"train {workdir.name} kill_at={kill_at}: exit {result.returncode} in {time.monotonic() - started:.1f}s")
    return result


def reference_run(tmp_path_factory) -> Path:
    """The workdir of one uninterrupted tiny run, made on first use and shared by every test of the
    session, across pytest-xdist workers too (the first to get the lock makes it; read it, or copy
    it before changing anything)."""
    if "workdir" not in _reference:
        shared = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            shared = shared.parent  # this session's directory, the same for every xdist worker
        _reference["cache"] = shared / "jaxrl_self_compilation_cache"
        root = shared / "jaxrl_self_reference"
        with open(shared / "jaxrl_self_reference.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (root / "done").exists():
                shutil.rmtree(root, ignore_errors=True)
                result = train(root / "run", _reference["cache"])
                assert result.returncode == 0, result.stderr[-3000:]
                (root / "stdout.txt").write_text(result.stdout)
                (root / "stderr.txt").write_text(result.stderr)
                (root / "done").touch()
        _reference["workdir"] = root / "run"
    return _reference["workdir"]


def reference_console(tmp_path_factory) -> tuple[str, str]:
    """(stdout, stderr) of the reference run."""
    root = reference_run(tmp_path_factory).parent
    return (root / "stdout.txt").read_text(), (root / "stderr.txt").read_text()


def cache_dir(tmp_path_factory) -> Path:
    """The session's shared compilation cache (after `reference_run` made it)."""
    reference_run(tmp_path_factory)
    return _reference["cache"]


def metrics_rows(workdir: Path) -> list[dict]:
    """metrics.jsonl rows as parsed JSON (non-finite values stay strings), wall-time keys left out."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k not in WALL_TIME_KEYS} for row in rows]


def checkpoint_steps(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def load_state(directory: Path, step: int) -> dict[str, np.ndarray]:
    """A checkpoint's train state as {tensor path: NumPy array}, read without a target structure."""
    import jax
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(directory, item_handlers={"state": ocp.StandardCheckpointHandler()}) as manager:
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def assert_same_state(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    """Bit-identical: same tensors, dtypes, shapes and bytes."""
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), f"{name} differs"


@contextlib.contextmanager
def persistent_compilation_cache(cache_dir: Path):
    """JAX's persistent compilation cache in `cache_dir` while the block runs, for compilations of
    0.5 s or more (reset so that it applies even when earlier tests compiled before it was set)."""
    import jax
    import jax.experimental.compilation_cache.compilation_cache as compilation_cache_lib

    min_compile_time = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    compilation_cache_lib.set_cache_dir(str(cache_dir))
    compilation_cache_lib.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)
        compilation_cache_lib.reset_cache()


def default_config_with(overrides: dict):
    """configs/default.py's config with the dotted keys of `overrides` set (not validated again)."""
    from jaxrl_self.config import load_config_file

    config = load_config_file(REPO / "configs" / "default.py")
    for key, value in overrides.items():
        section, *path, name = key.split(".")
        node = config[section]
        for part in path:
            node = node[part]
        node[name] = value
    return config
