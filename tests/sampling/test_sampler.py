"""The jitted sampler on a tiny random model: greedy vs a no-cache loop, log-probs vs a teacher-forced
forward, windowed decode vs one window, token statistics on request, one shared prefill per group,
per-row keys, stops, bf16, and shape bucketing."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.transformer import Transformer, positions_from_mask
from jaxrl_self.sampling.buckets import bucket_prompt_batch, pad_prompts
from jaxrl_self.sampling.processors import mask_padded_vocab, scale_by_temperature
from jaxrl_self.sampling.sampler import SamplingConfig, _chosen_log_prob, _raw_statistics, make_sampler, sample_from_model
from jaxrl_self.train.policy import completion_logprobs

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
CONFIG = ModelConfig(vocab_size=40, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                     intermediate_size=64, tie_word_embeddings=False, attention_bias=True, architecture="qwen2")
PAD, EOS, STEPS, GROUP = 0, 2, 12, 3
PROMPTS = [[5, 9, 11, 3, 7, 8, 21], [4, 30, 6], [12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24], [31]]


@pytest.fixture(scope="module")
def model():
    return Transformer(CONFIG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def split(model):
    return nnx.split(model)


@pytest.fixture(scope="module")
def prompts():
    tokens, mask = pad_prompts(PROMPTS, PAD)  # [4, 16], ragged, left-padded
    return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.fixture(scope="module")
def grouped_run(split):
    """Group sampler with token statistics, decoding in attention windows of 4, 8 and 12 steps."""
    return make_sampler(split[0], SamplingConfig(max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, group_size=GROUP,
                                                 token_statistics=True, decode_windows=3, decode_window_min=1))


@pytest.fixture(scope="module")
def greedy_run(split):
    """Greedy sampler with no stop token (eos_id -1 never occurs), in windows of 2, 4, ... 12 steps."""
    return make_sampler(split[0], SamplingConfig(max_new_tokens=STEPS, eos_id=-1, pad_id=PAD, temperature=0.0, decode_windows=6, decode_window_min=1))


@pytest.fixture(scope="module")
def no_stop_greedy(split, prompts, greedy_run):
    """Greedy completions `[B, STEPS]` of PROMPTS with no stop token."""
    return np.asarray(greedy_run(split[1], *prompts, jax.random.key(0)).tokens)


def naive_greedy(split, tokens, mask, steps, stop_ids):
    """Greedy decoding that reruns the full forward over prompt + generated tokens at every step."""
    graphdef, state = split
    batch, prompt_len = tokens.shape

    @jax.jit
    def next_token(state, seq, seq_mask, t):
        logits, _ = nnx.merge(graphdef, state)(seq, positions_from_mask(seq_mask), seq_mask)
        return jnp.argmax(jax.lax.dynamic_index_in_dim(logits, prompt_len + t - 1, axis=1, keepdims=False), axis=-1)

    seq = np.concatenate([np.asarray(tokens), np.full((batch, steps), PAD, np.int32)], axis=1)
    seq_mask = np.concatenate([np.asarray(mask), np.zeros((batch, steps), bool)], axis=1)
    done = np.zeros(batch, bool)
    for t in range(steps):
        token = np.asarray(next_token(state, seq, seq_mask, t))
        seq[:, prompt_len + t] = np.where(done, PAD, token)
        seq_mask[:, prompt_len + t] = ~done
        done |= np.isin(token, stop_ids)
    return seq[:, prompt_len:], seq_mask[:, prompt_len:]


def test_greedy_matches_full_recompute_loop(split, prompts, no_stop_greedy):
    tokens, _ = naive_greedy(split, *prompts, STEPS, stop_ids=[])
    np.testing.assert_array_equal(no_stop_greedy, tokens)


@jax.jit
def teacher_forced(state, prompt_tokens, prompt_mask, samples, temperature):
    """Log-probs `[N, T]` of the sampled tokens at `temperature`, the temperature-1 entropy `[N, T]`
    and the temperature-1 mean log-prob over the vocabulary `[N, T]`."""
    model = nnx.merge(nnx.graphdef(Transformer(CONFIG, rngs=nnx.Rngs(0))), state)
    logp, _ = completion_logprobs(model, prompt_tokens, prompt_mask, samples.tokens, samples.mask, temperature=temperature)
    _, entropy = completion_logprobs(model, prompt_tokens, prompt_mask, samples.tokens, samples.mask, with_entropy=True)
    sequence = jnp.concatenate([prompt_tokens, samples.tokens], axis=1)
    sequence_mask = jnp.concatenate([prompt_mask, samples.mask], axis=1)
    logits, _ = model(sequence, positions_from_mask(sequence_mask), sequence_mask)
    mean_logp = jnp.mean(jax.nn.log_softmax(logits[:, prompt_tokens.shape[1] - 1:-1], axis=-1), axis=-1)
    return logp, entropy, mean_logp


def test_logps_and_statistics_match_teacher_forced_forward(split, prompts, grouped_run):
    temperature = 0.7
    samples = grouped_run(split[1], *prompts, jax.random.key(1), temperature=temperature, top_p=0.9)
    logp, entropy, mean_logp = teacher_forced(split[1], *(jnp.repeat(x, GROUP, axis=0) for x in prompts), samples, temperature)
    mask = np.asarray(samples.mask)
    assert samples.logps.dtype == jnp.float32 and mask.sum() > 20
    np.testing.assert_allclose(np.asarray(samples.logps)[mask], np.asarray(logp)[mask], atol=1e-5)
    np.testing.assert_allclose(np.asarray(samples.entropy)[mask], np.asarray(entropy)[mask], atol=1e-5)
    np.testing.assert_allclose(np.asarray(samples.mean_logp_vocab)[mask], np.asarray(mean_logp)[mask], atol=1e-5)
    assert np.all(np.asarray(samples.logps)[~mask] == 0) and np.all(np.asarray(samples.entropy)[~mask] == 0)


def test_windowed_decode_matches_one_window(split):
    """3 and 7 (chunks of 7 and 3 steps) attention windows give the tokens and log-probs of
    one window over the whole cache, on random ragged prompts whose rows stop early, late and never.
    Log-probs agree to float32 rounding, not bitwise: XLA sums the attention's shorter rows in another order."""
    rng = np.random.default_rng(0)
    steps, eos = 20, 7
    prompts = [list(rng.integers(3, CONFIG.vocab_size, size=length)) for length in (1, 4, 9, 13, 2, 16)]
    tokens, mask = (jnp.asarray(x) for x in pad_prompts(prompts, PAD))
    sample = lambda windows: make_sampler(split[0], SamplingConfig(max_new_tokens=steps, eos_id=eos, pad_id=PAD, group_size=4,
                                                                   decode_windows=windows, decode_window_min=1))(split[1], tokens, mask, jax.random.key(8))
    reference = sample(1)
    lengths = np.asarray(reference.lengths)
    assert lengths.min() <= 3 and 10 <= np.max(np.where(reference.truncated, 0, lengths)) and np.any(reference.truncated)
    for windows in (3, 7):
        got = sample(windows)
        for name in ("tokens", "mask", "lengths", "truncated"):
            np.testing.assert_array_equal(getattr(got, name), getattr(reference, name), err_msg=f"{windows} windows: {name}")
        np.testing.assert_allclose(got.logps, reference.logps, atol=1e-6, rtol=1e-6, err_msg=f"{windows} windows")


def test_token_statistics_only_on_request(split, prompts, grouped_run):
    """Without `token_statistics` entropy and mean_logp_vocab are zeros; tokens and log-probs are unchanged."""
    config = SamplingConfig(max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, group_size=GROUP, decode_windows=3, decode_window_min=1)
    plain = make_sampler(split[0], config)(split[1], *prompts, jax.random.key(1), temperature=0.7)
    with_statistics = grouped_run(split[1], *prompts, jax.random.key(1), temperature=0.7)
    assert not np.any(plain.entropy) and not np.any(plain.mean_logp_vocab) and plain.entropy.shape == plain.logps.shape
    np.testing.assert_array_equal(plain.tokens, with_statistics.tokens)
    np.testing.assert_array_equal(plain.logps, with_statistics.logps)


@pytest.mark.parametrize("temperature", [1.0, 0.0, 0.7])
def test_statistics_equal_the_full_log_softmax(temperature):
    """`_raw_statistics` (one log-sum-exp shared with the chosen token's at temperature 1 / greedy)
    equals entropy and mean log-prob from a full `log_softmax`, padded vocabulary slots left out."""
    logits = mask_padded_vocab(3 * jax.random.normal(jax.random.key(0), (5, 50)), 45)
    tokens = jnp.arange(5, dtype=jnp.int32)
    logp, normaliser = _chosen_log_prob(logits, tokens, jnp.float32(temperature))
    entropy, mean_logp = jax.jit(_raw_statistics)(logits, normaliser, jnp.float32(temperature))
    raw = jax.nn.log_softmax(logits[:, :45], axis=-1)
    np.testing.assert_allclose(entropy, -jnp.sum(jnp.exp(raw) * raw, axis=-1), atol=1e-6, rtol=0)
    np.testing.assert_allclose(mean_logp, jnp.mean(raw, axis=-1), atol=1e-6, rtol=0)
    scaled = jax.nn.log_softmax(scale_by_temperature(logits, temperature), axis=-1)
    np.testing.assert_allclose(logp, scaled[jnp.arange(5), tokens], atol=1e-6, rtol=0)


def _all_shapes(jaxpr, shapes):
    """Every intermediate array shape in a jaxpr, sub-jaxprs (while/cond bodies, pjit) included."""
    for eqn in jaxpr.eqns:
        shapes.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _all_shapes(inner, shapes)
    return shapes


def test_group_shares_one_prefill_on_prompt_rows(model, prompts):
    config = SamplingConfig(max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, group_size=GROUP)
    jaxpr = jax.make_jaxpr(lambda tokens, mask, key: sample_from_model(model, tokens, mask, key, config))(*prompts, jax.random.key(0))
    shapes = _all_shapes(jaxpr.jaxpr, set())
    batch, prompt_len = prompts[0].shape
    hidden, mlp = CONFIG.hidden_size, CONFIG.intermediate_size
    prefill = prompt_len - 1  # the last prompt column is fed by the first decode step
    assert (batch, prefill, hidden) in shapes and (batch, prefill, mlp) in shapes  # prefill on B rows
    assert not any(shape[:2] == (batch * GROUP, prefill) for shape in shapes)  # ... never on B*G rows
    assert not {(batch, prefill, CONFIG.vocab_size), (batch, prompt_len, CONFIG.vocab_size)} & shapes  # no prompt logits
    assert (batch * GROUP, 1, hidden) in shapes  # decode on B*G rows, one token at a time


def test_group_members_differ_and_key_determines_output(split, prompts, grouped_run):
    first = grouped_run(split[1], *prompts, jax.random.key(2))
    again = grouped_run(split[1], *prompts, jax.random.key(2))
    other = grouped_run(split[1], *prompts, jax.random.key(3))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    tokens = np.asarray(first.tokens).reshape(len(PROMPTS), GROUP, STEPS)
    for b in range(len(PROMPTS)):
        assert len({row.tobytes() for row in tokens[b]}) == GROUP, f"prompt {b}: identical completions in a group"
    assert not np.array_equal(first.tokens, other.tokens)


def test_rows_do_not_depend_on_batch_composition(split, prompts, grouped_run):
    """Per-row keys come from (prompt id, g), so a prompt's completions ignore its batch neighbours."""
    tokens, mask = prompts
    ids = np.array([10, 11, 12, 13], np.int32)
    full = grouped_run(split[1], tokens, mask, jax.random.key(4), prompt_ids=ids)
    # another batch (same shape, so no recompilation): prompts 2 and 0 at new places, two new prompts
    other_tokens, other_mask = pad_prompts([[8, 8, 8], PROMPTS[2], [9] * 5, PROMPTS[0]], PAD)
    other = grouped_run(split[1], other_tokens, other_mask, jax.random.key(4), prompt_ids=np.array([50, 12, 51, 10]))
    for new, old in ((1, 2), (3, 0)):
        rows_new, rows_old = slice(new * GROUP, (new + 1) * GROUP), slice(old * GROUP, (old + 1) * GROUP)
        np.testing.assert_array_equal(other.tokens[rows_new], full.tokens[rows_old])
        np.testing.assert_array_equal(other.mask[rows_new], full.mask[rows_old])
        np.testing.assert_allclose(other.logps[rows_new], full.logps[rows_old], atol=1e-5)


def test_per_row_stop_on_eos_and_stop_ids(split, prompts, no_stop_greedy):
    reference = no_stop_greedy
    # stop ids chosen from what the rows emit: row 0's 4th token as EOS, row 1's 2nd as an extra stop id
    eos, extra = int(reference[0, 3]), int(reference[1, 1])
    run = make_sampler(split[0], SamplingConfig(max_new_tokens=STEPS, eos_id=eos, pad_id=PAD, temperature=0.0, stop_ids=(extra,)))
    samples = run(split[1], *prompts, jax.random.key(0))
    tokens, mask = naive_greedy(split, *prompts, STEPS, stop_ids=[eos, extra])
    np.testing.assert_array_equal(samples.tokens, tokens)
    np.testing.assert_array_equal(samples.mask, mask)
    assert samples.tokens.shape == (len(PROMPTS), STEPS)
    stopped = 0
    for row, expected in enumerate(reference):
        hits = np.flatnonzero(np.isin(expected, [eos, extra]))
        length = hits[0] + 1 if len(hits) else STEPS
        stopped += bool(len(hits))
        assert int(samples.lengths[row]) == length
        assert bool(samples.truncated[row]) == (not len(hits))
        assert bool(samples.finished[row]) == bool(len(hits))  # a stop token ended it (extra stop ids too)
        np.testing.assert_array_equal(samples.mask[row], np.arange(STEPS) < length)  # includes the stop token
        np.testing.assert_array_equal(samples.tokens[row, :length], expected[:length])
        assert np.all(np.asarray(samples.tokens[row, length:]) == PAD)
    assert stopped >= 2


def test_bfloat16_compute_returns_close_float32_logps(split, prompts):
    bf16_graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(dataclasses.replace(CONFIG, dtype="bfloat16"), rngs=nnx.Rngs(0))))
    run = make_sampler(bf16_graphdef, SamplingConfig(max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, group_size=GROUP))
    samples = run(split[1], *prompts, jax.random.key(5))  # the same float32 parameters, bf16 compute
    assert samples.logps.dtype == jnp.float32 and samples.entropy.dtype == jnp.float32
    fp32_logp, _, _ = teacher_forced(split[1], *(jnp.repeat(x, GROUP, axis=0) for x in prompts), samples, 1.0)
    mask = np.asarray(samples.mask)
    np.testing.assert_allclose(np.asarray(samples.logps)[mask], np.asarray(fp32_logp)[mask], atol=0.1)


def test_bucketed_prompts_compile_once_and_knobs_do_not_recompile(split, greedy_run, no_stop_greedy):
    """`greedy_run` compiled once for PROMPTS ([4, 16]); other lengths in that bucket and other knobs reuse it."""
    assert greedy_run.compilations() == 1
    for length in (5, 9, 14, 16):
        tokens, mask = pad_prompts([[3] * length, [4] * (length // 2 + 1), [5], [6] * (length - 1)], PAD)
        assert tokens.shape == (4, 16)
        greedy_run(split[1], tokens, mask, jax.random.key(6), temperature=0.5 + length / 10, top_p=0.9, top_k=length, min_p=0.01)
    assert greedy_run.compilations() == 1
    assert pad_prompts([[3] * 17], PAD)[0].shape == (1, 32)  # the next bucket: one more shape, at most


def test_bucket_prompt_batch_repads_left_padded_batches():
    tokens = np.array([[0, 0, 0, 5, 6], [0, 7, 8, 9, 1]], np.int32)
    mask = tokens > 0
    out_tokens, out_mask = bucket_prompt_batch(tokens, mask, PAD, multiple=8)
    assert out_tokens.shape == (2, 8)
    np.testing.assert_array_equal(out_tokens[:, -4:], tokens[:, 1:])
    np.testing.assert_array_equal(out_mask.sum(1), mask.sum(1))
    narrowed, _ = bucket_prompt_batch(np.pad(tokens, ((0, 0), (20, 0))), np.pad(mask, ((0, 0), (20, 0))), PAD, multiple=8)
    np.testing.assert_array_equal(narrowed, out_tokens)  # extra leading padding is dropped
    with pytest.raises(ValueError, match="left-padded"):
        bucket_prompt_batch(tokens[:, ::-1], mask[:, ::-1], PAD)
