"""Two processes on localhost joined by `jax.distributed` (CPU, 2 x 4 devices, Gloo collectives) on one
mesh spanning both: GRPO steps driven by hand agree on every loss, and the real `train_and_evaluate`
reads one prompt shard per process, logs the same metrics on both and matches one 8-device process."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from multihost_train_worker import RL_STEPS, SFT_STEPS

HERE = Path(__file__).parent
REPO = Path(__file__).resolve().parents[2]
WALL_TIME_KEYS = ("time/step_s",)
# compile with little optimization: halves the CPU time of these compile-bound runs; the same flags in
# every process of a comparison, so they compute the same values
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start(worker: str, args: list, devices: int, log_path: Path) -> tuple[subprocess.Popen, Path]:
    """Starts `worker` (a script next to this file) in a CPU-only process with `devices` devices."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, str(HERE / worker), *map(str, args)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    return process, log_path


def finish(started) -> None:
    for process, log_path in started:
        assert process.wait(timeout=900) == 0, log_path.read_text()[-3000:]


def test_two_processes_agree_on_every_loss(tmp_path):
    port = free_port()
    outputs = [tmp_path / f"process{i}.json" for i in range(2)]
    finish([start("multihost_worker.py", [i, 2, port, outputs[i]], 4, tmp_path / f"process{i}.log") for i in range(2)])
    results = [json.loads(path.read_text()) for path in outputs]
    assert [r["process_index"] for r in results] == [0, 1]
    assert all(r["process_count"] == 2 and r["devices"] == 8 for r in results)
    assert len(results[0]["losses"]) == 3
    assert results[0]["losses"] == results[1]["losses"]
    assert results[0]["grad_norms"] == results[1]["grad_norms"]
    assert all(g > 0 for g in results[0]["grad_norms"])
    # DAPO: process 1 lacked signal in round 0, so both sampled a second round and agree on the metrics
    first, second = (r["dynamic_sampling"] for r in results)
    assert first["metrics"] == second["metrics"]
    assert first["metrics"]["dynamic_sampling/rounds"] == 2 and first["metrics"]["dynamic_sampling/valid_fraction"] == 1
    assert first["metrics"]["reward/reward"] == 0.625  # mean of (0.5, 0.5) and (1.0, 0.5) over rounds and processes
    assert first["metrics"]["verifier_failures/timeout"] == 2  # counts summed: 0 + 0 and 1 + 1
    assert first["rows"] == [0, 1, 2, 3] and second["rows"] == [10, 11, 12, 13]  # each kept its own valid groups


def without_wall_time(rows):
    return [{k: v for k, v in row.items() if k not in WALL_TIME_KEYS} for row in rows]


def test_train_and_evaluate_on_two_processes_matches_one_process(tmp_path):
    port = free_port()
    outputs = [tmp_path / f"process{i}.json" for i in range(2)] + [tmp_path / "single.json"]
    started = [start("multihost_train_worker.py", [i, 2, port, tmp_path / "pair", outputs[i]], 4,
                     tmp_path / f"process{i}.log") for i in range(2)]
    started.append(start("multihost_train_worker.py", [0, 1, 0, tmp_path / "single", outputs[2]], 8,
                         tmp_path / "single.log"))
    finish(started)
    first, second, single = [json.loads(path.read_text()) for path in outputs]
    assert [r["process_index"] for r in (first, second)] == [0, 1]
    assert [r["process_count"] for r in (first, second, single)] == [2, 2, 1]
    assert all(r["devices"] == 8 for r in (first, second, single))

    # each process drew its own prompts (SFT batches, then RL rounds): disjoint halves of the
    # global batches, which in process order are exactly what the one-process run drew
    assert len(first["batches"]) == len(second["batches"]) == len(single["batches"]) == SFT_STEPS + RL_STEPS
    for mine, other, whole in zip(first["batches"], second["batches"], single["batches"]):
        assert mine["seed"] == other["seed"] == whole["seed"]
        assert not set(mine["indices"]) & set(other["indices"])
        assert mine["indices"] + other["indices"] == whole["indices"]

    # both processes log the same values; only process 0 wrote the files
    rows = without_wall_time(first["metrics"])
    assert rows == without_wall_time(second["metrics"])
    written = [json.loads(line) for line in (tmp_path / "pair" / "metrics.jsonl").read_text().splitlines()]
    assert len(written) == len(rows) and (tmp_path / "pair" / "report.md").exists()
    assert first["summary"] == second["summary"] == single["summary"]

    # and the values of one process on the same 8-device mesh: every loss to 1e-5, every metric close
    reference = without_wall_time(single["metrics"])
    assert [row.keys() for row in rows] == [row.keys() for row in reference]
    rl_losses = [(row["loss"], ref["loss"]) for row, ref in zip(rows, reference) if "loss" in row]
    assert len(rl_losses) == RL_STEPS
    for row, ref in zip(rows, reference):
        for key in ("loss", "sft/loss"):
            if key in row:
                assert abs(row[key] - ref[key]) <= 1e-5, (row["step"], key, row[key], ref[key])
        np.testing.assert_allclose([row[k] for k in row], [ref[k] for k in row], rtol=1e-4, atol=1e-5,
                                   err_msg=f"step {row['step']}: {list(row)}")
    rl_rows = [row for row in rows if "loss" in row]
    assert all(row["grad_norm"] > 0 and row["groups/with_signal"] > 0 for row in rl_rows)  # not a trivial zero loss
