"""Test setup: force 8 host CPU devices before JAX is imported (docs/architecture.md#tests).

The sharding tests (tests/parallel) use all 8. The end-to-end runs (the method and algorithm
integration tests, the tiny CLI job) set `config.mesh.num_devices = 1`: one device is how the CLI
runs on a CPU machine, and 8 fake devices sharing 2 cores make an RL step ~5x slower
(docs/results.md#figures-recorded-by-the-tests). Compile-bound modules (parity and learner tests on tiny
models) compile with most XLA optimizations off (the `fast_compile` fixture below)."""
import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after the XLA flags above)


@pytest.fixture
def fast_compile():
    """Most XLA optimizations off for a test whose programs are compiled once and run a few times on
    small inputs (`pytest.mark.usefixtures("fast_compile")`, or a module's `pytestmark`): compiling
    is most of its time, and ~25% faster this way, while the programs run ~2x slower
    (docs/results.md#figures-recorded-by-the-tests). Comparisons with a reference stay within their
    tolerances: the optimizations skipped change speed, not what is computed."""
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


LONG_TESTS = os.environ.get("JAXRL_SELF_LONG_TESTS") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "long: an opt-in test too long for the suite's budget (docs/testing.md)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `long` run only with JAXRL_SELF_LONG_TESTS=1; otherwise they are reported as skipped."""
    if LONG_TESTS:
        return
    skip = pytest.mark.skip(reason="opt-in long test: set JAXRL_SELF_LONG_TESTS=1 to run it (docs/testing.md lists each with its time)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
