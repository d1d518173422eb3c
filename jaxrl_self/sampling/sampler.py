"""Rollout sampler: one jitted, pure function — prefill the padded prompt batch once, broadcast the
KV cache to G completions per prompt, then decode in `lax.while_loop` until every row has stopped.

Log-probabilities returned (`logps`) are those of the temperature-scaled distribution
`log_softmax(logits / temperature)` (raw logits when greedy), *before* top-k/top-p/min-p
truncation — the same distribution the trainer recomputes for the importance ratio.
`entropy` and `mean_logp_vocab` describe the raw model distribution (temperature 1) at each
generated position; they feed the entropy (RENT) and self-certainty (INTUITOR) rewards without a
second forward pass.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrl_self.models.transformer import KVCache, positions_from_mask
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


class Samples(NamedTuple):
    """Sampler output for N = B*G rows (row b*G+g is completion g of prompt b)."""

    tokens: jnp.ndarray  # [N, T] int32, pad after the stop token
    mask: jnp.ndarray  # [N, T] bool, generated tokens incl. the stop token
    logps: jnp.ndarray  # [N, T] float32, behaviour log-probs (see module docstring)
    entropy: jnp.ndarray  # [N, T] float32, raw-distribution entropy
    mean_logp_vocab: jnp.ndarray  # [N, T] float32, (1/V) sum_v log p(v), raw distribution
    lengths: jnp.ndarray  # [N] int32
    truncated: jnp.ndarray  # [N] bool, reached max_new_tokens without a stop token


def _token_statistics(logits, tokens, temperature):
    """Per-row behaviour log-prob, raw entropy and raw mean log-prob over the vocabulary."""
    scaled_logp = jax.nn.log_softmax(scale_by_temperature(logits, temperature), axis=-1)
    chosen = jnp.take_along_axis(scaled_logp, tokens[:, None], axis=-1)[:, 0]
    raw_logp = jax.nn.log_softmax(logits, axis=-1)
    finite = jnp.isfinite(raw_logp)
    safe_logp = jnp.where(finite, raw_logp, 0.0)
    entropy = -jnp.sum(jnp.exp(safe_logp) * safe_logp * finite, axis=-1)
    mean_logp = jnp.sum(safe_logp, axis=-1) / jnp.maximum(jnp.sum(finite, axis=-1), 1)
    return chosen, entropy, mean_logp


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
    vocab_size = config.vocab_size or None
    params = knobs_from(config) if knobs is None else knobs
    temperature = params[0]
    if prompt_ids is None:
        prompt_ids = jnp.arange(batch, dtype=jnp.int32)
    keys = row_keys(key, prompt_ids, group)

    kv_mask = jnp.concatenate([prompt_mask, jnp.ones((batch, steps), bool)], axis=1)
    cache = KVCache.zeros(model.config, batch, prompt_len + steps)
    positions = positions_from_mask(prompt_mask)
    logits, cache = model(prompt_tokens, positions, kv_mask, cache, 0)
    cache = cache.repeat(group)
    kv_mask = jnp.repeat(kv_mask, group, axis=0)
    next_position = jnp.repeat(positions[:, -1] + 1, group)
    last_logits = jnp.repeat(logits[:, -1], group, axis=0)
    stop_ids = jnp.asarray((config.eos_id, *config.stop_ids), jnp.int32)

    def emit(t, logits, carry):
        """Chooses token t for every row from `logits [N, V]` and records it."""
        tokens, mask, logps, entropy, mean_logp, done = carry
        logits = logits if vocab_size is None else mask_padded_vocab(logits, vocab_size)
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(keys)
        token = choose_tokens(step_keys, logits, *params)
        token = jnp.where(done, config.pad_id, token)
        lp, ent, mlp = _token_statistics(logits, token, temperature)
        live = ~done
        tokens = tokens.at[:, t].set(token)
        mask = mask.at[:, t].set(live)
        logps = logps.at[:, t].set(jnp.where(live, lp, 0.0))
        entropy = entropy.at[:, t].set(jnp.where(live, ent, 0.0))
        mean_logp = mean_logp.at[:, t].set(jnp.where(live, mlp, 0.0))
        done = done | jnp.isin(token, stop_ids)
        return tokens, mask, logps, entropy, mean_logp, done

    zeros = jnp.zeros((n, steps), jnp.float32)
    carry = (jnp.full((n, steps), config.pad_id, jnp.int32), jnp.zeros((n, steps), bool), zeros, zeros, zeros, jnp.zeros((n,), bool))
    carry = emit(0, last_logits, carry)

    def cond(state):
        t, _, carry = state
        return (t < steps) & ~jnp.all(carry[-1])

    def body(state):
        t, cache, carry = state
        previous = jax.lax.dynamic_slice_in_dim(carry[0], t - 1, 1, axis=1)
        position = (next_position + t - 1)[:, None]
        logits, cache = model(previous, position, kv_mask, cache, prompt_len + t - 1)
        return t + 1, cache, emit(t, logits[:, 0], carry)

    _, _, carry = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, carry))
    tokens, mask, logps, entropy, mean_logp, done = carry
    return Samples(tokens, mask, logps, entropy, mean_logp, jnp.sum(mask, axis=1).astype(jnp.int32), ~done)


def make_sampler(model_graphdef, config: SamplingConfig):
    """A jitted `sample(state, prompt_tokens, prompt_mask, key, prompt_ids=None, **knobs) -> Samples`.

    The function is compiled once per (prompt length, batch) shape; `sample.compilations()` reports
    how many shapes were compiled so far (logged as a metric).
    """

    @jax.jit
    def sample(state, prompt_tokens, prompt_mask, key, prompt_ids, knobs):
        model = nnx.merge(model_graphdef, state)
        return sample_from_model(model, prompt_tokens, prompt_mask, key, config, prompt_ids, knobs)

    def run(state, prompt_tokens, prompt_mask, key, prompt_ids=None, **knob_overrides):
        """knob_overrides: temperature / top_k / top_p / min_p for this call (no recompilation)."""
        if prompt_ids is None:
            prompt_ids = jnp.arange(prompt_tokens.shape[0], dtype=jnp.int32)
        return sample(state, prompt_tokens, prompt_mask, key, prompt_ids, knobs_from(config, **knob_overrides))

    run.compilations = sample._cache_size
    return run
