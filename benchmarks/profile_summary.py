"""Where the time of a jitted program goes: a `jax.profiler` trace summarised by XLA operation.

`trace(directory)` records the enclosed calls (`jax.profiler.trace` with a Perfetto trace);
`summarize(directory)` reads the trace back and sums the time of every XLA operation the CPU or
accelerator ran, by program (`hlo_module`, e.g. `jit_sample`, `jit_update`) and by kind of
operation (the event name with its numeric suffix removed: `ynn_fusion` is a matrix multiply
fused by XNNPACK on CPU, `fusion`/`loop_fusion` element-wise work, `dot` an unfused matmul,
`copy`/`transpose`/`dynamic-update-slice` data movement, `scatter`/`gather` indexed access).
Operations inside a `while` loop or a `cond` are counted once each (the control-flow op's own event,
which spans them, is left out, so nothing is counted twice). The trace itself stays in `directory` for TensorBoard or Perfetto.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

import jax

CONTROL_FLOW = ("while", "cond", "conditional", "call")


def trace(directory: str):
    """Context manager recording a trace with a Perfetto JSON copy into `directory`."""
    return jax.profiler.trace(directory, create_perfetto_trace=True)


def summarize(directory: str, top: int = 12) -> dict:
    """Seconds of XLA operations in the newest Perfetto trace under `directory`, by program and by kind.

    Returns {"op_seconds": total, "by_program": {module: s}, "by_kind": {kind: s} (top `top`),
    "by_op": {"module/op": s} (top `top`)}, each sorted by time.
    """
    paths = sorted(glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"), recursive=True), key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {directory}")
    with gzip.open(paths[-1]) as f:
        events = json.load(f)["traceEvents"]
    by_program, by_kind, by_op = collections.Counter(), collections.Counter(), collections.Counter()
    for event in events:
        args = event.get("args") or {}
        op = args.get("hlo_op")
        kind = re.sub(r"(\.clone|[._]\d+)+$", "", event.get("name", ""))
        if event.get("ph") != "X" or not op or kind in CONTROL_FLOW:
            continue
        seconds = event.get("dur", 0.0) / 1e6
        module = args.get("hlo_module", "?")
        by_program[module] += seconds
        by_kind[kind] += seconds
        by_op[f"{module}/{op}"] += seconds
    rounded = lambda counter, n=None: {k: round(v, 4) for k, v in counter.most_common(n)}
    return {"op_seconds": round(sum(by_program.values()), 4), "by_program": rounded(by_program),
            "by_kind": rounded(by_kind, top), "by_op": rounded(by_op, top)}
