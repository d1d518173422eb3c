"""Continuous batching (`SamplingConfig.slots`): the same tokens, log-probs, statistics, lengths and
truncation flags as the static sampler for the same prompts and key, in row order, whatever the
number of slots; per-row cache writes at each row's own slot."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_self.models.kv_cache import KVCache, write_rows
from jaxrl_self.models.transformer import Transformer
from jaxrl_self.sampling.buckets import pad_prompts
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler

from tests.sampling.test_sampler import CONFIG, PAD

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
STEPS, EOS, GROUP = 16, 7, 3


@pytest.fixture(scope="module")
def split():
    return nnx.split(Transformer(CONFIG, rngs=nnx.Rngs(3)))


@pytest.fixture(scope="module")
def prompts():
    rng = np.random.default_rng(1)
    rows = [list(rng.integers(3, CONFIG.vocab_size, size=length)) for length in (1, 5, 9, 3, 12)]
    return tuple(jnp.asarray(x) for x in pad_prompts(rows, PAD))


def sample(split, prompts, temperature, **settings):
    config = SamplingConfig(max_new_tokens=STEPS, eos_id=EOS, pad_id=PAD, group_size=GROUP, stop_ids=(11,),
                            temperature=temperature, decode_windows=1, **settings)
    return make_sampler(split[0], config)(split[1], *prompts, jax.random.key(5))


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_continuous_batching_gives_the_static_samplers_rows(split, prompts, temperature):
    """15 rows (5 prompts x 3) of very different lengths, in 1, 4 and 14 slots (a slot reused up to
    15 times, its cache holding a longer earlier row's entries past the new row's end)."""
    static = sample(split, prompts, temperature, token_statistics=True)
    lengths = np.asarray(static.lengths)
    assert lengths.min() <= 3 and np.any(static.truncated) and np.any(~np.asarray(static.truncated))
    for slots in (1, 4, 14):
        got = sample(split, prompts, temperature, token_statistics=True, slots=slots)
        for name in ("tokens", "mask", "lengths", "truncated"):
            np.testing.assert_array_equal(getattr(got, name), getattr(static, name), err_msg=f"{slots} slots: {name}")
        for name in ("logps", "entropy", "mean_logp_vocab"):
            np.testing.assert_allclose(getattr(got, name), getattr(static, name), atol=2e-5, rtol=2e-5, err_msg=f"{slots} slots: {name}")


def test_write_rows_writes_each_row_at_its_own_slot():
    cache = jnp.zeros((3, 2, 6, 4))  # [B, K, S, D]
    new = jnp.arange(3 * 2 * 4, dtype=jnp.float32).reshape(3, 1, 2, 4) + 1  # [B, Q, K, D]
    written = np.asarray(write_rows(cache, new, jnp.array([0, 5, 2])))
    expected = np.zeros((3, 2, 6, 4), np.float32)
    for row, slot in enumerate((0, 5, 2)):
        expected[row, :, slot] = np.asarray(new[row, 0])
    np.testing.assert_array_equal(written, expected)
    np.testing.assert_array_equal(write_rows(cache, new, 4)[:, :, 4], new[:, 0])  # one slot for all rows


@pytest.mark.parametrize("stacked", [False, True])
def test_load_rows_copies_prefilled_prompts_into_chosen_slots(stacked):
    config = dataclasses.replace(CONFIG, num_layers=2, scan_layers=stacked)
    cache = jax.tree.map(lambda x: x + 9.0, KVCache.zeros(config, 3, 5))
    rng = np.random.default_rng(0)
    prompts = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), KVCache.zeros(config, 4, 2))
    loaded = cache.load_rows(prompts, jnp.array([3, 0, 1]), jnp.array([True, False, True]))
    for layer in range(2):
        (k, _), (pk, _) = loaded.layer(layer), prompts.layer(layer)
        np.testing.assert_array_equal(k[0, :, :2], pk[3])  # [B, K, S, D]
        np.testing.assert_array_equal(k[2, :, :2], pk[1])
        assert np.all(np.asarray(k[1]) == 9.0) and np.all(np.asarray(k[:, :, 2:]) == 9.0)


def test_a_never_sample_token_is_never_drawn_even_when_most_likely(split, prompts):
    """The 3 tokens the model samples most are banned: 10,240 draws (in 64 slots) never hold them."""
    config = SamplingConfig(max_new_tokens=STEPS, eos_id=-1, pad_id=PAD, group_size=128, decode_windows=1)
    free = make_sampler(split[0], config)(split[1], *prompts, jax.random.key(0))
    favourites = tuple(int(t) for t in np.argsort(np.bincount(np.asarray(free.tokens).ravel(), minlength=CONFIG.vocab_size))[-3:])
    banned = make_sampler(split[0], dataclasses.replace(config, never_sample_ids=favourites, slots=64))(split[1], *prompts, jax.random.key(0))
    tokens = np.asarray(banned.tokens)
    assert tokens.size >= 10_000 and not np.isin(tokens, favourites).any()
    assert np.isin(np.asarray(free.tokens), favourites).mean() > 0.1
