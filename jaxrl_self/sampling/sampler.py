"""Rollout sampler: one jitted, pure function — prefill the padded prompt batch once, broadcast the
KV cache to G completions per prompt, then decode in `lax.while_loop` until every row has stopped.

The prefill covers all prompt columns but the last (prompts are left-padded, so every row's last
token sits in column P-1); the loop feeds that column at step 0 and each new token after it, so
one loop body — one forward, one token choice — produces every completion token.

The decode attends only to the cache slots filled so far, up to a static bound: the T steps run
in `SamplingConfig.decode_windows` segments of C = ceil(T / decode_windows) steps (at least
`decode_window_min`: a short decode is one loop), segment s
(steps [s*C, (s+1)*C)) over a cache of the first P + (s+1)*C - 1 slots, grown with zero slots
between segments. Each segment is a `lax.while_loop` of the same body that exits at once when
every row has stopped; the program holds one decode step per segment, so compile time grows with
their number (not with T), and growing the cache briefly holds two copies of it. A slot beyond
the window would only have been masked out (weight exp(-inf) = 0), so the tokens are those of one
loop over the whole cache; float sums over the shorter rows may round differently (~1e-6 relative).

Log-probabilities returned (`logps`) are those of the temperature-scaled distribution
`log_softmax(logits / temperature)` (raw logits when greedy), *before* top-k/top-p/min-p
truncation — the same distribution the trainer recomputes for the importance ratio. Tokens in
`SamplingConfig.never_sample_ids` are removed from that distribution (a reserved token kept at a
probability below 1e-5 changes a log-prob by less than that).
With `SamplingConfig.token_statistics`, `entropy` and `mean_logp_vocab` describe the raw model
distribution (temperature 1) at each generated position; they feed the entropy (RENT) and
self-certainty (INTUITOR) rewards without a second forward pass. Without it they are zeros and
no step computes them.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_self.models.kv_cache import KVCache
from jaxrl_self.models.transformer import cast_matrices, positions_from_mask
from jaxrl_self.parallel.rules import SAMPLING_AXIS_RULES, activation_mesh
from jaxrl_self.parallel.sharding import state_shardings
from jaxrl_self.sampling.processors import choose_tokens, mask_padded_vocab, scale_by_temperature


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to sample. `max_new_tokens`, `group_size` and ids are static; the rest are traced."""

    max_new_tokens: int
    eos_id: int
    pad_id: int
    group_size: int = 1
    stop_ids: tuple = ()
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    vocab_size: int = 0  # real vocabulary size; logits beyond it are masked (0: use the logits' size)
    never_sample_ids: tuple = ()  # tokens masked out before every choice (e.g. LaSeR's reserved verdict token)
    token_statistics: bool = False  # compute Samples.entropy / mean_logp_vocab (zeros otherwise)
    decode_windows: int = 4  # decode segments, each attending to a static prefix of the cache (1: the whole cache)
    # ... each at least this many steps: a short decode runs as one loop (its cache is small, and each
    # segment adds one more decode step for XLA to compile)
    decode_window_min: int = 64
    # rows decoded at once: 0 (or >= B*G) = every row in one static batch; 0 < S < B*G = continuous
    # batching over S slots (`sample_continuously`)
    slots: int = 0


class Samples(NamedTuple):
    """Sampler output for N = B*G rows (row b*G+g is completion g of prompt b)."""

    tokens: jnp.ndarray  # [N, T] int32, pad after the stop token
    mask: jnp.ndarray  # [N, T] bool, generated tokens incl. the stop token
    logps: jnp.ndarray  # [N, T] float32, behaviour log-probs (see module docstring)
    entropy: jnp.ndarray  # [N, T] float32, raw-distribution entropy (zeros without token_statistics)
    mean_logp_vocab: jnp.ndarray  # [N, T] float32, (1/V) sum_v log p(v), raw distribution (idem)
    lengths: jnp.ndarray  # [N] int32
    truncated: jnp.ndarray  # [N] bool, reached max_new_tokens without a stop token

    @property
    def finished(self) -> jnp.ndarray:
        """`[N]` bool: the row generated something and a stop token ended it."""
        return ~self.truncated & (self.lengths > 0)


def _chosen_log_prob(logits, tokens, temperature):
    """Behaviour log-prob `[N]` of `tokens [N] int32` under `logits [N, V] float32` scaled by
    `temperature`, and that distribution's log-normaliser `logsumexp(scaled) [N]`."""
    scaled = scale_by_temperature(logits, temperature)
    normaliser = jax.nn.logsumexp(scaled, axis=-1)
    return jnp.take_along_axis(scaled, tokens[:, None], axis=-1)[:, 0] - normaliser, normaliser


def _raw_statistics(logits, scaled_normaliser, temperature):
    """Entropy and mean log-prob over the vocabulary of the raw distribution `softmax(logits)`,
    each `[N] float32`, from logits `[N, V] float32` (-inf slots, padding, left out of both).

    `scaled_normaliser` `[N]` is `_chosen_log_prob`'s; at temperature 1 or greedy the logits were
    not scaled, so it is the raw log-normaliser as well and no second log-sum-exp runs.
    """
    unscaled = (temperature == 1.0) | (temperature <= 0)
    normaliser = jax.lax.cond(unscaled, lambda: scaled_normaliser, lambda: jax.nn.logsumexp(logits, axis=-1))
    finite = jnp.isfinite(logits)
    logp = jnp.where(finite, logits - normaliser[:, None], 0.0)
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)  # exp(0) * 0 = 0 at the padding
    mean_logp = jnp.sum(logp, axis=-1) / jnp.maximum(jnp.sum(finite, axis=-1), 1)
    return entropy, mean_logp


def window_ends(steps: int, windows: int, min_steps: int = 1) -> tuple:
    """The static step at which each of (at most) `windows` decode segments ends: C, 2C, ..., steps
    with C = max(ceil(steps / windows), min_steps)."""
    chunk = max(-(-steps // max(windows, 1)), min_steps, 1)
    return tuple(range(chunk, steps, chunk)) + (steps,)


def cast_for_compute(model):
    """The same model with its matrices (ndim >= 2) stored in the compute dtype.

    The layers cast every matrix to `config.compute_dtype` at use; doing it once before the decode
    loop gives bit-identical results without re-casting all weights at every step. Vectors (norm
    scales) stay float32, as the layers read them in float32.
    """
    dtype = model.config.compute_dtype
    if dtype == jnp.float32:
        return model
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, cast_matrices(state, dtype))


def row_keys(key, prompt_ids, group_size):
    """`[B*G]` keys: fold_in(fold_in(key, prompt_id[b]), g) — independent of batch layout."""
    per_prompt = jax.vmap(lambda i: jax.random.fold_in(key, i))(prompt_ids)
    return jax.vmap(lambda k: jax.vmap(lambda g: jax.random.fold_in(k, g))(jnp.arange(group_size)))(per_prompt).reshape(-1)


def knobs_from(config: SamplingConfig, **overrides):
    """The traced sampling settings (temperature, top_k, top_p, min_p) as scalars, with overrides."""
    values = {name: getattr(config, name) for name in ("temperature", "top_k", "top_p", "min_p")}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return (jnp.float32(values["temperature"]), jnp.int32(values["top_k"]), jnp.float32(values["top_p"]), jnp.float32(values["min_p"]))


def sample_from_model(model, prompt_tokens, prompt_mask, key, config: SamplingConfig, prompt_ids=None, knobs=None) -> Samples:
    """Samples `config.group_size` completions per prompt (un-jitted body; see `make_sampler`).

    prompt_tokens/prompt_mask `[B, P]` (left-padded), key a PRNG key, prompt_ids `[B] int32` global
    prompt ids used to derive per-row keys (defaults to 0..B-1), knobs from `knobs_from`.
    """
    batch, prompt_len = prompt_tokens.shape
    group, steps = config.group_size, config.max_new_tokens
    n = batch * group
    if 0 < config.slots < n:
        return sample_continuously(model, prompt_tokens, prompt_mask, key, config, prompt_ids, knobs)
    params = knobs_from(config) if knobs is None else knobs
    if prompt_ids is None:
        prompt_ids = jnp.arange(batch, dtype=jnp.int32)
    keys = row_keys(key, prompt_ids, group)

    model = cast_for_compute(model)
    prompt_mask = prompt_mask.astype(bool)
    # cache slots: P prompt columns, then tokens 0..steps-2 (the last token is never fed back);
    # step t writes slot P-1+t, so the segment ending at step e needs the first P+e-1 slots
    ends = window_ends(steps, config.decode_windows, config.decode_window_min)
    width = lambda end: prompt_len + end - 1
    kv_mask = jnp.concatenate([prompt_mask, jnp.ones((batch, steps - 1), bool)], axis=1)
    positions = positions_from_mask(prompt_mask)
    cache = KVCache.zeros(model.config, batch, width(ends[0]))
    if prompt_len > 1:  # prefill all but the last prompt column, once per prompt (B rows, not B*G)
        _, cache = model.hidden_states(prompt_tokens[:, :-1], positions[:, :-1], kv_mask[:, :width(ends[0])], cache, 0)
    cache = cache.repeat(group)
    kv_mask = jnp.repeat(kv_mask, group, axis=0)
    last_position = jnp.repeat(positions[:, -1], group)
    stop_ids = jnp.asarray((config.eos_id, *config.stop_ids), jnp.int32)

    def step(window_mask, state):
        """Feeds the previous token (the last prompt column at t=0) and records token t of every row.

        window_mask `[N, W]` is the kv_mask of the cache's W slots in this segment.
        """
        t, cache, fed, done, outputs = state
        logits, cache = model(fed[:, None], (last_position + t)[:, None], window_mask, cache, prompt_len - 1 + t)
        token, columns = _choose(logits[:, 0], keys, t, done, params, config)
        outputs = tuple(out.at[:, t].set(col) for out, col in zip(outputs, columns))
        return t + 1, cache, token, done | jnp.isin(token, stop_ids), outputs

    first_fed = jnp.repeat(prompt_tokens[:, -1], group)
    t, fed, done, outputs = jnp.int32(0), first_fed, jnp.zeros((n,), bool), _empty_outputs(n, config)
    for end in ends:  # one while_loop per attention window; those after the last live step exit at once
        cond = lambda state, end=end: (state[0] < end) & ~jnp.all(state[3])
        state = (t, cache.grow(width(end)), fed, done, outputs)
        t, cache, fed, done, outputs = jax.lax.while_loop(cond, functools.partial(step, kv_mask[:, :width(end)]), state)
    return _samples(outputs, config)


def _choose(logits, keys, t, done, params, config: SamplingConfig):
    """One decode step's token choice for N rows.

    logits `[N, V]` of the fed tokens; keys `[N]` per-row keys; t the step (an int, or `[N]` int32,
    each row's own); done `[N]` bool rows that have stopped (they get `pad_id`). Returns the
    tokens `[N] int32` and the output columns (token, live, logp[, entropy, mean_logp]), each `[N]`.
    """
    logits = logits if not config.vocab_size else mask_padded_vocab(logits, config.vocab_size)
    if config.never_sample_ids:
        logits = logits.at[:, jnp.asarray(config.never_sample_ids, jnp.int32)].set(-jnp.inf)
    step_keys = jax.vmap(jax.random.fold_in)(keys, jnp.broadcast_to(t, keys.shape))
    token = jnp.where(done, config.pad_id, choose_tokens(step_keys, logits, *params))
    logp, normaliser = _chosen_log_prob(logits, token, params[0])
    stats = _raw_statistics(logits, normaliser, params[0]) if config.token_statistics else ()
    live = ~done
    return token, (token, live) + tuple(jnp.where(live, x, 0.0) for x in (logp, *stats))


def _empty_outputs(n, config: SamplingConfig):
    """The output columns of N rows before any step: tokens (pad), mask, logps[, entropy, mean_logp]."""
    steps = config.max_new_tokens
    float_columns = 3 if config.token_statistics else 1
    return (jnp.full((n, steps), config.pad_id, jnp.int32), jnp.zeros((n, steps), bool)) + (jnp.zeros((n, steps), jnp.float32),) * float_columns


def _samples(outputs, config: SamplingConfig) -> Samples:
    """`Samples` from the filled output columns; a row is truncated when no stop token ended it."""
    tokens, mask, logps, *stats = outputs
    entropy, mean_logp = stats if config.token_statistics else (jnp.zeros_like(logps),) * 2
    stopped = jnp.any(mask & jnp.isin(tokens, jnp.asarray((config.eos_id, *config.stop_ids), jnp.int32)), axis=1)
    return Samples(tokens, mask, logps, entropy, mean_logp, jnp.sum(mask, axis=1).astype(jnp.int32), ~stopped)


def sample_continuously(model, prompt_tokens, prompt_mask, key, config: SamplingConfig, prompt_ids=None, knobs=None) -> Samples:
    """`sample_from_model`'s rows decoded by continuous batching in `config.slots` slots.

    The N = B*G rows wait in order; each slot decodes one row, and when that row stops (or reaches
    `max_new_tokens`) the slot takes the next waiting row at once: its prompt's key/value entries,
    prefilled once per prompt before the loop, are copied into the slot and its step count restarts
    at 0. The batch stays full until the queue runs out, so a few long rows no longer keep finished
    ones computing. Row r always uses its own key at its own step count, so the tokens are those of
    `sample_from_model` for the same prompts and key (float sums may round ~1e-6 differently), and
    outputs come back in row order. Each step attends over the whole cache of P + T - 1 slots
    (the slots decode at different steps, so there is no common window to bound it).
    """
    batch, prompt_len = prompt_tokens.shape
    group, steps = config.group_size, config.max_new_tokens
    n = batch * group
    slots = min(config.slots, n)
    params = knobs_from(config) if knobs is None else knobs
    prompt_ids = jnp.arange(batch, dtype=jnp.int32) if prompt_ids is None else prompt_ids
    keys = row_keys(key, prompt_ids, group)
    stop_ids = jnp.asarray((config.eos_id, *config.stop_ids), jnp.int32)

    model = cast_for_compute(model)
    prompt_mask = prompt_mask.astype(bool)
    positions = positions_from_mask(prompt_mask)
    prefilled = KVCache.zeros(model.config, batch, prompt_len - 1)
    if prompt_len > 1:  # every prompt's columns but the last, once per prompt
        _, prefilled = model.hidden_states(prompt_tokens[:, :-1], positions[:, :-1], prompt_mask[:, :-1], prefilled, 0)
    new_slots_mask = jnp.ones((slots, steps - 1), bool)

    def load(cache, rows, take, t, fed):
        """Slots where `take` start row `rows[s]`: its prompt's entries, step 0, its last prompt token."""
        cache = cache.load_rows(prefilled, rows // group, take)
        return cache, jnp.where(take, 0, t), jnp.where(take, prompt_tokens[rows // group, -1], fed)

    def step(state):
        cache, rows, t, fed, done, next_row, outputs = state
        prompt = rows // group
        kv_mask = jnp.concatenate([prompt_mask[prompt], new_slots_mask], axis=1)
        logits, cache = model(fed[:, None], (positions[prompt, -1] + t)[:, None], kv_mask, cache, prompt_len - 1 + t)
        token, columns = _choose(logits[:, 0], keys[rows], t, done, params, config)
        target = jnp.where(done, n, rows)  # idle slots write nowhere
        outputs = tuple(out.at[target, t].set(col, mode="drop") for out, col in zip(outputs, columns))
        finished = done | jnp.isin(token, stop_ids) | (t + 1 >= steps)
        waiting = next_row + jnp.cumsum(finished) - 1  # the row each finished slot would take
        take = finished & (waiting < n)
        rows = jnp.where(take, waiting, rows)
        cache, t, fed = load(cache, rows, take, t + 1, token)
        return cache, rows, t, fed, finished & ~take, next_row + jnp.sum(take), outputs

    rows = jnp.arange(slots, dtype=jnp.int32)
    cache, t, fed = load(KVCache.zeros(model.config, slots, prompt_len + steps - 1), rows, jnp.ones((slots,), bool),
                         jnp.zeros((slots,), jnp.int32), jnp.zeros((slots,), jnp.int32))
    state = (cache, rows, t, fed, jnp.zeros((slots,), bool), jnp.int32(slots), _empty_outputs(n, config))
    outputs = jax.lax.while_loop(lambda state: ~jnp.all(state[4]), step, state)[-1]
    return _samples(outputs, config)


def make_layout_copier(model_graphdef, mesh):
    """`copy(params) -> params` in the sampler's layout: matrices in the compute dtype
    (`cast_for_compute`), placed by `SAMPLING_AXIS_RULES` on `mesh` (replicated over data and
    fsdp, split over tensor), so the decode loop gathers no weight. Compiled once."""
    def to_compute(params):
        return nnx.split(cast_for_compute(nnx.merge(model_graphdef, params)))[1]

    compiled = {}

    def copy(params):
        if "fn" not in compiled:
            layout = state_shardings(jax.eval_shape(to_compute, params), mesh, SAMPLING_AXIS_RULES)
            compiled["fn"] = jax.jit(to_compute, out_shardings=layout)
        return compiled["fn"](params)

    return copy


def make_sampler(model_graphdef, config: SamplingConfig, mesh=None):
    """A jitted `sample(state, prompt_tokens, prompt_mask, key, prompt_ids=None, **knobs) -> Samples`.

    The function is compiled once per (batch, prompt length) shape — pad prompts to a few lengths
    with `jaxrl_self.sampling.buckets` — and never for new knob values; `run.compilations()` reports
    how many shapes were compiled so far (logged as a metric). With a `mesh` of several devices,
    activations are constrained to it and each call first copies the params into the sampling
    layout (`make_layout_copier`).
    """
    copy_to_layout = make_layout_copier(model_graphdef, mesh) if mesh is not None and mesh.size > 1 else None

    @jax.jit
    def sample(state, prompt_tokens, prompt_mask, key, prompt_ids, knobs):
        model = nnx.merge(model_graphdef, state)
        with activation_mesh(mesh, SAMPLING_AXIS_RULES):
            return sample_from_model(model, prompt_tokens, prompt_mask, key, config, prompt_ids, knobs)

    def run(state, prompt_tokens, prompt_mask, key, prompt_ids=None, **knob_overrides):
        """knob_overrides: temperature / top_k / top_p / min_p for this call (no recompilation).

        Inputs are converted to jax arrays of fixed dtypes first, so NumPy and jax callers share
        one compilation per shape.
        """
        prompt_ids = jnp.arange(prompt_tokens.shape[0]) if prompt_ids is None else prompt_ids
        if copy_to_layout is not None:
            state = copy_to_layout(state)
        inputs = (jnp.asarray(prompt_tokens, jnp.int32), jnp.asarray(prompt_mask, bool), key, jnp.asarray(prompt_ids, jnp.int32))
        return sample(state, *inputs, knobs_from(config, **knob_overrides))

    run.compilations = sample._cache_size
    run.lower = sample.lower  # ahead-of-time compilation (benchmarks/aot_memory.py)
    return run
