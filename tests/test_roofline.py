"""benchmarks/roofline.py: the roofline arithmetic on a model small enough to count by hand, and the
measuring functions on tiny sizes."""
import dataclasses
import importlib.util
import math
import os
import sys

import pytest

_spec = importlib.util.spec_from_file_location(
    "roofline", os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "roofline.py"))
roofline = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("roofline", roofline)  # the dataclass looks its module up
_spec.loader.exec_module(roofline)

# E=8, L=2, H=2, K=1, D=4, F=16, V=32
SHAPE = roofline.ModelShape(hidden=8, layers=2, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=32)


def constant_rates(rate):
    return roofline.Rates(measure=lambda m, k, n, dtype, repeats: rate)


def test_counts_by_hand():
    assert SHAPE.layer_matmul_params == 2 * (8 * 8 + 2 * 8 * 4 + 8 * 8 + 3 * 8 * 16) == 1152
    assert SHAPE.head_params == 256
    assert SHAPE.vector_params == 2 * (2 * 8 + 8 + 2 * 4) + 8 == 72
    assert SHAPE.params == 1152 + 2 * 256 + 72
    assert dataclasses.replace(SHAPE, tied=True).params == 1152 + 256 + 72
    assert SHAPE.kv_bytes_per_slot(4) == 2 * 2 * 1 * 4 * 4 == 64
    assert SHAPE.step_weight_bytes(4) == (1152 + 256) * 4 + 72 * 4 == 5920
    assert SHAPE.step_weight_bytes(2) == (1152 + 256) * 2 + 72 * 4
    # 3 tokens, logits at 2: matmuls, head, 4*L*H*D * 6 causal pairs
    assert SHAPE.forward_flops(3, 2) == 2 * 1152 * 3 + 2 * 256 * 2 + 4 * 2 * 2 * 4 * 6 == 8320
    matmul_flops = sum(c * 2 * m * k * n for c, (m, k, n) in SHAPE.layer_matmuls(5))
    assert matmul_flops == 2 * 1152 * 5


def test_sampler_bound_memory_bound():
    """Bandwidth 1 byte/s, compute free: seconds = bytes read. One prompt of 2 tokens, G=2, rows emit 1 and 3."""
    bound = roofline.sampler_bound(SHAPE, constant_rates(1e30), 1.0, [2], 2, [1, 3], 4)
    # prefill reads the weights once; step t: weights + 64 bytes per attended slot (prompt 2 + t per live row)
    expected = 5920 + (5920 + 64 * 4) + (5920 + 64 * 3) + (5920 + 64 * 4)
    assert bound["seconds"] == pytest.approx(expected)
    assert bound["memory_bound_steps"] == 3 and bound["steps"] == 3 and bound["tokens"] == 4
    assert bound["roofline_tokens_per_s"] == pytest.approx(4 / expected)


def test_sampler_and_grpo_bound_compute_bound():
    """Every matmul at 1 FLOP/s, memory free: seconds = FLOPs."""
    rates = constant_rates(1.0)
    bound = roofline.sampler_bound(SHAPE, rates, 1e30, [2], 2, [1, 3], 4)
    prefill = 2 * 1152 * 1 + 4 * 2 * 2 * 4 * 1  # one token (the last prompt token is fed by step 0)
    steps = [2 * 1408 * 2 + 64 * 4, 2 * 1408 + 64 * 3, 2 * 1408 + 64 * 4]
    assert bound["seconds"] == pytest.approx(prefill + sum(steps))
    assert bound["memory_bound_steps"] == 0

    grpo = roofline.grpo_iteration_bound(SHAPE, rates, 1e30, [2], 2, 1, 4, with_reference=True)
    sampling = prefill + 2 * 1408 * 2 + 64 * 4
    forward = 2 * SHAPE.forward_flops(3, 1)  # 2 rows of 2 + 1 tokens, logits at 1
    assert grpo["forward_flops"] == forward == 15616
    assert grpo["forwards"] == 4
    assert grpo["seconds"] == pytest.approx(sampling + 4 * forward)
    no_ref = roofline.grpo_iteration_bound(SHAPE, rates, 1e30, [2], 2, 1, 4, with_reference=False)
    assert no_ref["seconds"] == pytest.approx(sampling + 3 * forward)


def test_rate_buckets():
    rates = constant_rates(1.0)
    assert [rates.bucket(m) for m in (1, 5, 8, 9, 5000)] == [1, 8, 8, 16, 1024]
    rates.rate(5, 3, 7)
    assert list(rates.measured) == [(8, 3, 7)]


def test_measurements_are_positive_and_finite():
    flops = roofline.matmul_flops_per_s(8, 16, 8, "float32", repeats=2)
    assert flops > 0 and math.isfinite(flops)
    read = roofline.memory_read_bytes_per_s(1 << 20, repeats=2)
    assert read["nbytes"] == 1 << 20
    assert read["best"] > 0 and math.isfinite(read["best"])
    assert read["best"] == max(v for k, v in read.items() if k not in ("nbytes", "threads"))
