"""Logits processors against an explicit NumPy distribution on small vocabularies."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.sampling.processors import choose_tokens, first_argmax, ordered_key, truncate

truncate_jit = jax.jit(truncate)
choose_jit = jax.jit(choose_tokens)


def reference_keep(logits, top_k, top_p, min_p):
    """Kept-token mask by the textbook recipe: sort, cut at the k-th logit, then the nucleus of the
    top-k distribution renormalised, then the min-p ratio."""
    keep_rows = []
    for row in np.asarray(logits, np.float64):
        keep = np.isfinite(row)
        ordered = np.sort(row)[::-1]
        if top_k > 0:
            keep &= row >= ordered[min(top_k, len(row)) - 1]
        if top_p < 1.0:  # on the top-k set's distribution, renormalised
            candidates = np.sort(row[keep])[::-1]
            probs = np.exp(candidates - candidates[0])
            probs /= probs.sum()
            mass_before = np.cumsum(probs) - probs
            nucleus = max(int(np.sum(mass_before < top_p)), 1)
            keep &= row >= candidates[nucleus - 1]
        keep &= np.exp(row - ordered[0]) >= min_p
        keep_rows.append(keep)
    return np.array(keep_rows)


def test_ordered_key_preserves_float_order():
    x = np.array([-np.inf, -1e30, -2.5, -1e-30, -0.0, 0.0, 1e-30, 3.0, 1e30, np.inf], np.float32)
    keys = np.asarray(ordered_key(jnp.asarray(x))).astype(np.int64)
    assert np.all(np.diff(keys)[[i for i in range(len(x) - 1) if i != 4]] > 0)
    assert keys[4] == keys[5]  # -0 == +0


def test_truncate_matches_sorting_reference():
    rng = np.random.default_rng(0)
    vocab = 24  # one shape, one compilation
    for trial in range(200):
        logits = (rng.normal(size=(3, vocab)) * rng.uniform(0.1, 5)).astype(np.float32)
        if trial % 3 == 0:
            logits = np.round(logits)  # ties, including -0.0 vs 0.0
        if trial % 5 == 0:
            logits[:, : int(rng.integers(1, vocab))] = -np.inf  # already excluded tokens
        top_k = int(rng.integers(0, vocab + 3))
        top_p = float(rng.choice([1.0, rng.uniform(0, 1)]))
        min_p = float(rng.choice([0.0, rng.uniform(0, 1)]))
        kept = np.isfinite(np.asarray(truncate_jit(jnp.asarray(logits), top_k, top_p, min_p)))
        np.testing.assert_array_equal(kept, reference_keep(logits, top_k, top_p, min_p), err_msg=f"trial {trial}: k={top_k} p={top_p} min_p={min_p}")


def test_truncate_keeps_what_transformers_warpers_keep():
    """top-k, then top-p on the renormalised top-k distribution, then min-p: the kept tokens equal
    those of `transformers`' TopK -> TopP -> MinP warpers (their order in `generate`)."""
    import torch
    from transformers.generation.logits_process import MinPLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    def hf_keep(logits, top_k, top_p, min_p):
        scores = torch.tensor(logits)
        warpers = ([TopKLogitsWarper(top_k)] if top_k > 0 else []) + ([TopPLogitsWarper(top_p)] if top_p < 1 else []) + (
            [MinPLogitsWarper(min_p)] if min_p > 0 else [])
        for warper in warpers:
            scores = warper(None, scores)
        return torch.isfinite(scores).numpy()

    example = np.log(np.array([[0.4, 0.3, 0.2, 0.1]], np.float32))  # the two sets intersected kept 2 tokens
    kept = np.isfinite(np.asarray(truncate_jit(jnp.asarray(example), 2, 0.55, 0.0)))
    np.testing.assert_array_equal(kept, hf_keep(example, 2, 0.55, 0.0))
    assert kept.sum() == 1
    rng = np.random.default_rng(7)
    for trial in range(150):
        logits = (rng.normal(size=(4, 32)) * rng.uniform(0.3, 4)).astype(np.float32)
        top_k, top_p = int(rng.integers(0, 20)), float(rng.choice([1.0, rng.uniform(0.05, 0.99)]))
        min_p = float(rng.choice([0.0, rng.uniform(0.01, 0.5)]))
        np.testing.assert_array_equal(np.isfinite(np.asarray(truncate_jit(jnp.asarray(logits), top_k, top_p, min_p))),
                                      hf_keep(logits, top_k, top_p, min_p), err_msg=f"trial {trial}: k={top_k} p={top_p} min_p={min_p}")


def test_truncate_neutral_settings_keep_everything():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 50)), jnp.float32)
    np.testing.assert_array_equal(truncate_jit(logits, 0, 1.0, 0.0), logits)


DRAWS = 40_000  # one batch shape for every V=8 test: one compilation


def _draws(logits, count=DRAWS, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=0):
    """`count` independent tokens from the same `[V]` logits (one row per key)."""
    keys = jax.random.split(jax.random.key(seed), count)
    rows = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (count, len(logits)))
    return np.asarray(choose_jit(keys, rows, temperature, top_k, top_p, min_p))


# chi-square critical values at upper-tail probability 1e-4, by degrees of freedom (scipy.stats.chi2.isf)
CHI2_CRITICAL_1E4 = {1: 15.14, 2: 18.42, 3: 21.11, 4: 23.51, 5: 25.74, 6: 27.86, 7: 29.88}
LOGITS = np.array([2.0, 1.5, 1.4, 0.3, 0.0, -0.5, -1.0, -3.0], np.float32)


def test_greedy_and_top_k_one_are_argmax():
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(DRAWS, 8)), jnp.float32)
    keys = jax.random.split(jax.random.key(0), DRAWS)
    argmax = np.argmax(np.asarray(logits), axis=-1)
    np.testing.assert_array_equal(choose_jit(keys, logits, 0.0, 0, 1.0, 0.0), argmax)
    np.testing.assert_array_equal(choose_jit(keys, logits, 1.3, 1, 1.0, 0.0), argmax)


@pytest.mark.parametrize("settings", [dict(top_k=3), dict(top_p=0.6), dict(min_p=0.3), dict(top_k=5, top_p=0.8, min_p=0.1, temperature=0.7)])
def test_truncated_sampling_never_emits_excluded_tokens(settings):
    temperature = settings.pop("temperature", 1.0)
    allowed = reference_keep(LOGITS[None] / temperature, settings.get("top_k", 0), settings.get("top_p", 1.0), settings.get("min_p", 0.0))[0]
    assert 0 < allowed.sum() < len(LOGITS)
    tokens = _draws(LOGITS, temperature=temperature, **settings)
    assert allowed[tokens].all()
    assert set(np.unique(tokens)) == set(np.flatnonzero(allowed))  # and every allowed token shows up


def test_minus_inf_tokens_are_never_drawn():
    logits = np.array([0.0, -np.inf, 5.0, -np.inf, -np.inf, 4.0, -np.inf, -np.inf], np.float32)
    assert set(np.unique(_draws(logits, seed=3))) == {0, 2, 5}


@pytest.mark.parametrize("settings", [dict(temperature=1.0), dict(temperature=0.6, top_p=0.9), dict(temperature=1.5, top_k=4, min_p=0.05)])
def test_empirical_frequencies_match_the_distribution(settings):
    """Counts over n draws: every token within 5 binomial sigmas, and a chi-square test at p > 1e-4."""
    n = DRAWS
    temperature = settings.pop("temperature")
    scaled = LOGITS.astype(np.float64) / temperature
    keep = reference_keep(scaled[None], settings.get("top_k", 0), settings.get("top_p", 1.0), settings.get("min_p", 0.0))[0]
    probs = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
    probs /= probs.sum()
    counts = np.bincount(_draws(LOGITS, temperature=temperature, seed=7, **settings), minlength=len(LOGITS))
    sigma = np.sqrt(n * probs * (1 - probs))
    assert np.all(np.abs(counts - n * probs) <= 5 * sigma + 1e-9), (counts, n * probs)
    chi2 = np.sum((counts[keep] - n * probs[keep]) ** 2 / (n * probs[keep]))
    dof = int(keep.sum()) - 1
    assert chi2 < CHI2_CRITICAL_1E4[dof], (chi2, dof)


def test_sampling_across_cdf_blocks():
    """Support spread over several 256-slot blocks of the two-level CDF search, at block edges."""
    vocab, n = 700, DRAWS
    support = np.array([0, 3, 255, 256, 300, 511, 512, 699])
    logits = np.full(vocab, -np.inf, np.float32)
    logits[support] = np.linspace(0.0, 1.4, len(support))
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    counts = np.bincount(_draws(logits, seed=11), minlength=vocab)
    assert counts[probs == 0].sum() == 0
    sigma = np.sqrt(n * probs * (1 - probs))
    assert np.all(np.abs(counts - n * probs) <= 5 * sigma + 1e-9), (counts[support], (n * probs)[support])


def test_first_argmax_is_jnp_argmax_on_ties_nans_and_excluded_rows():
    rng = np.random.default_rng(0)
    logits = rng.integers(-3, 3, size=(64, 50)).astype(np.float32)  # many ties
    logits[5] = -np.inf  # every token excluded
    logits[6, [7, 9]] = np.nan  # NaN counts as the maximum, the first one wins
    logits[7, 3] = np.inf
    np.testing.assert_array_equal(np.asarray(first_argmax(jnp.asarray(logits))), np.argmax(logits, axis=-1))
    assert first_argmax(jnp.asarray(logits)).dtype == jnp.int32
