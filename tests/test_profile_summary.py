"""benchmarks/profile_summary.py: a real jax.profiler trace of a small jitted program, summarised."""
import importlib.util
import os

import jax
import jax.numpy as jnp

_spec = importlib.util.spec_from_file_location(
    "profile_summary", os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "profile_summary.py"))
profile_summary = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_summary)


def test_summary_attributes_op_time_to_the_program_and_leaves_out_loops(tmp_path):
    @jax.jit
    def looped_matmuls(x, w):
        return jax.lax.fori_loop(0, 20, lambda i, x: jnp.tanh(x @ w), x).sum()

    x, w = jnp.ones((128, 256)), jnp.full((256, 256), 0.01)
    looped_matmuls(x, w).block_until_ready()  # compiled outside the trace
    with profile_summary.trace(str(tmp_path)):
        looped_matmuls(x, w).block_until_ready()
    summary = profile_summary.summarize(str(tmp_path))
    assert summary["op_seconds"] > 0
    assert next(iter(summary["by_program"])) == "jit_looped_matmuls"  # the program that ran the most
    assert not set(summary["by_kind"]) & set(profile_summary.CONTROL_FLOW)
    assert abs(sum(summary["by_program"].values()) - summary["op_seconds"]) < 1e-3
