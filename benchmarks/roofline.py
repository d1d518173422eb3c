"""This machine's limits, measured in the same run as a benchmark, and the roofline of the work.

Measured limits (jitted XLA on `jax.devices()[0]`, the fastest of `repeats` calls after one warm-up
call: a limit is what the machine does when nothing disturbs it, and on a shared machine the
median of a few millisecond-long calls swings by a third from run to run):

  matmul_flops_per_s(m, k, n, dtype)   2*m*k*n / seconds of `[m, k] @ [k, n]` in `dtype`, the product
      repeated in a loop inside one jitted call (~2e8 FLOPs per call on CPU, 2e11 on an
      accelerator), so call dispatch does not count. The operands are the same arrays at every
      iteration, so a small weight stays in cache: this is the compute ceiling at that shape;
      memory traffic is bounded separately.
  memory_read_bytes_per_s(nbytes)      bytes / seconds of a full-array sum over `nbytes` of float32
      (far larger than the caches): the max of a jitted `jnp.sum`, NumPy's `sum` on one thread and
      NumPy on `os.cpu_count()` threads (one slice each; NumPy releases the GIL).

Model shape (`ModelShape`): E hidden, L layers, H heads, K kv heads, D head dim, F MLP width, V vocab.
  layer_matmul_params = L * (E*H*D + 2*E*K*D + H*D*E + 3*E*F)   (q, k, v, o, gate, up, down)
  head_params         = E*V                                     (the output head; the tied embedding)
  vector_params       = L * (2*E + H*D + 2*K*D) + E             (norm scales, q/k/v biases)
The input embedding is a row gather (rows*E values per step), not counted as read unless tied
(then it is the output head and is read whole).

Forward FLOPs of one row of S tokens (T of them need logits), `forward_flops`:
  2 * layer_matmul_params * S + 2 * head_params * T + 4 * L * H * D * S*(S+1)/2
  (matmuls, output head, and QK^T + PV over the causal pairs only: the minimum work).

Time lower bounds, `matmul_seconds`: a matmul of shape (m, k, n) takes at least 2mkn /
matmul_flops_per_s(m', k, n), m' = m rounded up to a power of two, capped at `max_m` (rates grow
with m, so the rate at m' >= m is an upper bound on the rate at m); attention FLOPs run at the best
rate measured (`peak`).

  decode step (rows r live, each attending to s_i cache slots):
      bytes = (layer_matmul_params + head_params) * dtype_bytes + vector_params * 4
              + 2 * L * K * D * dtype_bytes * sum_i s_i                 (weights + KV cache read)
      FLOPs = 2 * (layer_matmul_params + head_params) * r + 4 * L * H * D * sum_i s_i
      time >= max(bytes / bandwidth, matmul_seconds)
  sampler call (B prompts of lengths P_b, G rows each, row i emits n_i tokens incl. its stop token):
      prefill of the B prompts once (P_b - 1 tokens each, no logits: compute bound, and the
      weights read once), then steps t = 0 .. max(n_i) - 1 with the rows n_i > t live,
      row i attending to P_b + t slots (its prompt and its tokens so far; the KV of a shared
      prompt is counted once per row, as a per-row cache holds it).
      roofline tokens/s = sum_i n_i / (prefill bound + sum of step bounds)
  GRPO iteration (compute roofline, `grpo_iteration_bound`): the sampler call's bound, plus
      (1 with a KL reference, else 0) + 3 (update: forward + backward ~ 3x forward) forwards of
      every row (prompt + completion tokens, logits at the completion positions), each at its
      matmul_seconds. The reward and the batch building count nothing.
fraction of roofline = measured tokens/s / roofline tokens/s = bound seconds / measured seconds.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

FORMULAS = {
    "layer_matmul_params": "L*(E*H*D + 2*E*K*D + H*D*E + 3*E*F)",
    "forward_flops_per_row": "2*layer_matmul_params*S + 2*E*V*T + 4*L*H*D*S*(S+1)/2 (causal pairs)",
    "decode_step_bound_s": "max(((layer_matmul_params + E*V)*dtype_bytes + vectors*4 + 2*L*K*D*dtype_bytes*sum_slots) "
                           "/ read_bandwidth, sum over matmuls 2*m*k*n / matmul_rate(m,k,n) + attention_flops / peak)",
    "sampler_bound_s": "prefill (B prompts once, compute bound or weights read once) + sum over steps t of the "
                       "decode bound with the rows still live at t",
    "update_bound_s": "3 x forward (forward + backward) of every row, compute bound",
    "grpo_iteration_bound_s": "sampler_bound_s + (1 if KL reference else 0) x forward + update_bound_s",
    "fraction": "bound_s / measured_s = measured tokens/s / roofline tokens/s",
}


def _best_seconds(fn, repeats):
    """Fewest wall seconds of `fn()` (which must block) over `repeats` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_flops_per_s(m: int, k: int, n: int, dtype="float32", repeats: int = 5, target_flops: float | None = None) -> float:
    """Measured FLOP/s of `[m, k] @ [k, n]` in `dtype` (2*m*k*n FLOPs each).

    One jitted call runs the product `reps` times in a loop (reps = target_flops / (2mkn), so that
    per-call dispatch does not count: a decode step runs all its matmuls in one program); each
    iteration scales `a` by a scalar taken from the previous product, so none is hoisted.
    """
    flops = 2.0 * m * k * n
    target_flops = target_flops or (2e8 if jax.default_backend() == "cpu" else 2e11)
    reps = int(min(max(math.ceil(target_flops / flops), 1), 100_000))
    a = jax.random.normal(jax.random.key(0), (m, k), dtype)  # [m, k]
    b = (jax.random.normal(jax.random.key(1), (k, n), dtype) / math.sqrt(k)).astype(dtype)  # [k, n]

    @jax.jit
    def products(a, b):
        def body(_, scale):
            out = (a * scale) @ b  # [m, n]
            return (out[0, 0] * 1e-30 + 1).astype(dtype)
        return jax.lax.fori_loop(0, reps, body, jnp.ones((), dtype))

    seconds = _best_seconds(lambda: products(a, b).block_until_ready(), repeats)
    return reps * flops / seconds


def default_read_bytes() -> int:
    return 256 * 2**20 if jax.default_backend() == "cpu" else 2**30


def memory_read_bytes_per_s(nbytes: int | None = None, repeats: int = 5) -> dict:
    """Measured read bandwidth (bytes/s) over an `nbytes` float32 array: {"jax_sum", "numpy_1_thread",
    "numpy_threads", "best", "nbytes", "threads"}; NumPy only on the CPU backend."""
    nbytes = nbytes or default_read_bytes()
    count = nbytes // 4
    x = jnp.ones((count,), jnp.float32)  # [count]
    total = jax.jit(jnp.sum)
    result = {"nbytes": count * 4, "jax_sum": count * 4 / _best_seconds(lambda: total(x).block_until_ready(), repeats)}
    x = None  # free it before NumPy allocates its copy
    if jax.default_backend() == "cpu":
        y = np.ones((count,), np.float32)
        result["numpy_1_thread"] = count * 4 / _best_seconds(lambda: y.sum(), repeats)
        threads = os.cpu_count() or 1
        if threads > 1:
            parts = np.array_split(y, threads)
            with ThreadPoolExecutor(threads) as pool:
                result["numpy_threads"] = count * 4 / _best_seconds(lambda: list(pool.map(np.sum, parts)), repeats)
        result["threads"] = threads
    result["best"] = max(v for key, v in result.items() if key not in ("nbytes", "threads"))
    return result


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """E hidden, L layers, H heads, K kv heads, D head dim, F MLP width, V vocab (module docstring)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool = False

    @property
    def layer_matmul_params(self) -> int:
        e, h, k, d, f = self.hidden, self.heads, self.kv_heads, self.head_dim, self.intermediate
        return self.layers * (e * h * d + 2 * e * k * d + h * d * e + 3 * e * f)

    @property
    def head_params(self) -> int:
        return self.hidden * self.vocab

    @property
    def vector_params(self) -> int:
        return self.layers * (2 * self.hidden + self.heads * self.head_dim + 2 * self.kv_heads * self.head_dim) + self.hidden

    @property
    def params(self) -> int:
        """All parameters (the embedding counted once when tied)."""
        return self.layer_matmul_params + self.head_params * (1 if self.tied else 2) + self.vector_params

    def layer_matmuls(self, m: int) -> list[tuple[int, tuple[int, int, int]]]:
        """(count, (m, k, n)) of the matmuls of `m` token rows through all layers (no output head)."""
        e, hd, kd, f, n = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate, self.layers
        return [(n, (m, e, hd)), (2 * n, (m, e, kd)), (n, (m, hd, e)), (2 * n, (m, e, f)), (n, (m, f, e))]

    def attention_flops(self, pairs: float) -> float:
        """QK^T and PV FLOPs over `pairs` (query, key) pairs, all layers and heads."""
        return 4.0 * self.layers * self.heads * self.head_dim * pairs

    def forward_flops(self, seq: int, logit_positions: int) -> float:
        """One row of `seq` tokens, logits at `logit_positions` of them, causal attention."""
        return (2.0 * self.layer_matmul_params * seq + 2.0 * self.head_params * logit_positions
                + self.attention_flops(seq * (seq + 1) / 2))

    def step_weight_bytes(self, dtype_bytes: int) -> float:
        """Bytes of weights one decode step must read (matrices in the compute dtype, vectors fp32)."""
        return (self.layer_matmul_params + self.head_params) * dtype_bytes + self.vector_params * 4

    def kv_bytes_per_slot(self, dtype_bytes: int) -> int:
        """Bytes of K and V of one cache slot of one row, all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


class Rates:
    """Measured matmul FLOP/s by shape (cached), m rounded up to a power of two and capped at `max_m`."""

    def __init__(self, dtype="float32", max_m: int = 1024, repeats: int = 5, measure=matmul_flops_per_s):
        self.dtype, self.max_m, self.repeats, self._measure, self.measured = dtype, max_m, repeats, measure, {}

    def bucket(self, m: int) -> int:
        return min(1 << max(0, math.ceil(math.log2(max(m, 1)))), self.max_m)

    def rate(self, m: int, k: int, n: int) -> float:
        shape = (self.bucket(m), k, n)
        if shape not in self.measured:
            self.measured[shape] = self._measure(*shape, dtype=self.dtype, repeats=self.repeats)
        return self.measured[shape]

    @property
    def peak(self) -> float:
        return max(self.measured.values(), default=math.inf)

    def matmul_seconds(self, matmuls) -> float:
        """Lower bound seconds of `[(count, (m, k, n))]`."""
        return sum(count * 2.0 * m * k * n / self.rate(m, k, n) for count, (m, k, n) in matmuls)

    def table(self) -> dict:
        return {f"{m}x{k}x{n}": round(r / 1e9, 2) for (m, k, n), r in sorted(self.measured.items())}


def forward_seconds(shape: ModelShape, rates: Rates, rows: int, seq: int, logit_positions: int) -> float:
    """Compute-bound seconds of a forward of `rows` rows of `seq` tokens (`logit_positions` with logits)."""
    matmuls = shape.layer_matmuls(rows * seq)
    if logit_positions:
        matmuls.append((1, (rows * logit_positions, shape.hidden, shape.vocab)))
    seconds = rates.matmul_seconds(matmuls)
    return seconds + rows * shape.attention_flops(seq * (seq + 1) / 2) / rates.peak


def sampler_bound(shape: ModelShape, rates: Rates, bandwidth: float, prompt_lens, group: int, lengths,
                  dtype_bytes: int) -> dict:
    """Lower bound of one sampler call (module docstring).

    prompt_lens `[B]` real prompt lengths, lengths `[B*G]` tokens each row emits (row b*G+g is
    completion g of prompt b). Returns seconds, its prefill / decode parts, how many steps were
    bound by memory, the bytes and FLOPs, and the roofline tokens/s.
    """
    prompt_lens = np.asarray(prompt_lens, np.int64)
    lengths = np.asarray(lengths, np.int64)
    row_prompt = np.repeat(prompt_lens, group)  # [N]
    weight_bytes = shape.step_weight_bytes(dtype_bytes)
    kv_slot = shape.kv_bytes_per_slot(dtype_bytes)
    prefill_tokens = int(np.maximum(prompt_lens - 1, 0).sum())
    prefill_matmul = rates.matmul_seconds(shape.layer_matmuls(max(prefill_tokens, 1))) if prefill_tokens else 0.0
    prefill_attention = sum(shape.attention_flops(p * (p + 1) / 2) for p in np.maximum(prompt_lens - 1, 0))
    prefill_s = max(weight_bytes / bandwidth, prefill_matmul + prefill_attention / rates.peak)
    decode_s, memory_bound_steps, total_bytes, total_flops = 0.0, 0, 0.0, 0.0
    for t in range(int(lengths.max(initial=0))):
        live = lengths > t
        rows = int(live.sum())
        slots = float((row_prompt[live] + t).sum())
        step_bytes = weight_bytes + kv_slot * slots
        matmuls = shape.layer_matmuls(rows) + [(1, (rows, shape.hidden, shape.vocab))]
        compute_s = rates.matmul_seconds(matmuls) + shape.attention_flops(slots) / rates.peak
        memory_s = step_bytes / bandwidth
        memory_bound_steps += memory_s >= compute_s
        decode_s += max(memory_s, compute_s)
        total_bytes += step_bytes
        total_flops += 2.0 * (shape.layer_matmul_params + shape.head_params) * rows + shape.attention_flops(slots)
    seconds = prefill_s + decode_s
    tokens = int(lengths.sum())
    return {"seconds": seconds, "prefill_s": prefill_s, "decode_s": decode_s, "steps": int(lengths.max(initial=0)),
            "memory_bound_steps": int(memory_bound_steps), "decode_bytes": total_bytes, "decode_flops": total_flops,
            "weight_bytes_per_step": weight_bytes, "tokens": tokens, "roofline_tokens_per_s": tokens / seconds}


def grpo_iteration_bound(shape: ModelShape, rates: Rates, bandwidth: float, prompt_lens, group: int, new_tokens: int,
                         dtype_bytes: int, with_reference: bool) -> dict:
    """Lower bound of one GRPO iteration: sampling + (reference forward) + update (module docstring).

    Every row emits `new_tokens` tokens; the forwards run each row's prompt + completion
    (lengths `prompt_lens[b] + new_tokens`), logits at the completion positions.
    """
    prompt_lens = np.asarray(prompt_lens, np.int64)
    sampling = sampler_bound(shape, rates, bandwidth, prompt_lens, group, np.full(len(prompt_lens) * group, new_tokens),
                             dtype_bytes)
    forward_s = sum(forward_seconds(shape, rates, group, int(p) + new_tokens, new_tokens) for p in prompt_lens)
    forward_flops = float(sum(group * shape.forward_flops(int(p) + new_tokens, new_tokens) for p in prompt_lens))
    forwards = 3 + int(with_reference)
    seconds = sampling["seconds"] + forwards * forward_s
    return {"seconds": seconds, "sampling_s": sampling["seconds"], "forward_s": forward_s,
            "forwards": forwards, "forward_flops": forward_flops, "train_flops": forwards * forward_flops,
            "sampling": sampling}
