"""Test setup: force 8 host CPU devices before JAX is imported (ARCHITECTURE.md, Tests).

The sharding tests (tests/parallel) use all 8. The end-to-end runs (the method and algorithm
integration tests, the tiny CLI job) set `config.mesh.num_devices = 1`: one device is how the CLI
runs on a CPU machine, and 8 fake devices sharing 2 cores make an RL step ~5x slower (measured
1.0 s vs 0.2 s on configs/self_check.py)."""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
