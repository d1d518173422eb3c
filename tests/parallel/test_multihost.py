"""Two processes on localhost joined by `jax.distributed` (CPU, 2 x 4 devices, Gloo collectives)
run GRPO steps on one mesh spanning both, each from its own data shard, and agree on every loss."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("multihost_worker.py")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_agree_on_every_loss(tmp_path):
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    outputs = [tmp_path / f"process{i}.json" for i in range(2)]
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    workers = []
    for i in range(2):
        with open(logs[i], "w") as log:
            workers.append(subprocess.Popen([sys.executable, str(WORKER), str(i), "2", str(port), str(outputs[i])], env=env,
                                            stdout=log, stderr=subprocess.STDOUT))
    for worker, log in zip(workers, logs):
        assert worker.wait(timeout=900) == 0, log.read_text()[-3000:]
    results = [json.loads(path.read_text()) for path in outputs]
    assert [r["process_index"] for r in results] == [0, 1]
    assert all(r["process_count"] == 2 and r["devices"] == 8 for r in results)
    assert len(results[0]["losses"]) == 3
    assert results[0]["losses"] == results[1]["losses"]
    assert results[0]["grad_norms"] == results[1]["grad_norms"]
    assert all(g > 0 for g in results[0]["grad_norms"])
