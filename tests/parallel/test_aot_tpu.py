"""The GRPO update compiled ahead of time for TPU topologies (no TPU needed: libtpu's compiler runs
on the CPU), through `benchmarks/aot_memory.py`, the code the memory-fit figures of real model
sizes come from. Needs libtpu (`pip install -e ".[test]"` installs it through "jax[tpu]"); without
it these tests fail with that instruction rather than skip.

A small Llama-shaped model (vocab 8192, hidden 256, 4 layers, 8 heads, 4 kv heads, head_dim 32,
mlp 768, bfloat16 compute, tied embeddings), 16 prompts x 4 completions of 64 + 128 tokens, GRPO
with the k3 KL (the reference is in the state), configs/default.py's settings otherwise (one
micro-batch: every chip's rows at once).
"""
import functools
import importlib.util
import pathlib

import pytest

_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "aot_memory.py"
_SPEC = importlib.util.spec_from_file_location("aot_memory", _PATH)
aot = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(aot)

SMALL_HF = {
    "model_type": "llama", "vocab_size": 8192, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 32, "hidden_act": "silu", "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "max_position_embeddings": 256,
}
BATCH = dict(prompts=16, group=4, prompt_len=64, new_tokens=128, dtype="bfloat16")

# Per-chip temp bytes (XLA's buffer assignment: activations kept for the backward pass, gathered
# weights, workspaces) of the small update above on v5e:2x2, mesh data=1 fsdp=4 tensor=1, 16 rows
# per chip in one micro-batch. Measured at commit 934a2ac (activations split over the hidden
# dimension, every chip holding every row, logits at every position): 1_524_105_728 bytes (1.42
# GiB); with activations split by rows, log-probs at completion positions and the donated state:
# 202_515_456 bytes (0.19 GiB). The bound fails the old layout and leaves room for compiler changes.
UPDATE_TEMP_BYTES_BOUND = 300_000_000

# Per-chip temp bytes on twice the chips along fsdp (v5e:2x4, 1,8,1 vs v5e:2x2, 1,4,1): half the rows
# per chip, so about half the activations when they are split by rows. Measured at commit
# 934a2ac: 1_524_105_728 -> 1_512_540_160 bytes, ratio 0.992 (the activations were not split by
# rows); now 202_515_456 -> 83_438_080, ratio 0.412: more than half goes, as XLA keeps a small
# enough program's buffers in on-chip memory, which temp bytes do not count. The test asks for
# at most 0.6 (the old layout fails it); docs/scaling.md has the ratio at real model sizes.
MAX_FSDP_DOUBLING_RATIO = 0.6


@functools.lru_cache(maxsize=None)
def _update_report(topology: str, mesh_shape: tuple) -> dict:
    try:
        report = aot.aot_update(SMALL_HF, topology=topology, mesh_shape=mesh_shape, **BATCH)
    except aot.LibTPUMissing as error:
        pytest.fail(f"{error} (the test extra lists it: pip install -e '.[test]')")
    report.pop("_compiled")
    return report


def test_small_grpo_update_temp_bytes_per_chip_within_bound():
    report = _update_report("v5e:2x2", (1, 4, 1))
    memory = report["memory"]
    assert report["rows_per_chip_per_micro_batch"] == 16
    assert memory["fits"], memory
    assert memory["temp_bytes"] <= UPDATE_TEMP_BYTES_BOUND, (
        f"per-chip temp bytes {memory['temp_bytes']:,} exceed UPDATE_TEMP_BYTES_BOUND {UPDATE_TEMP_BYTES_BOUND:,}")


def test_doubling_fsdp_divides_update_temp_bytes():
    four = _update_report("v5e:2x2", (1, 4, 1))["memory"]["temp_bytes"]
    eight = _update_report("v5e:2x4", (1, 8, 1))["memory"]["temp_bytes"]
    ratio = eight / four
    assert ratio <= MAX_FSDP_DOUBLING_RATIO, (
        f"temp bytes per chip: {four:,} on 4 chips, {eight:,} on 8 chips (fsdp 4 -> 8): ratio {ratio:.3f}, "
        f"expected at most {MAX_FSDP_DOUBLING_RATIO}")
