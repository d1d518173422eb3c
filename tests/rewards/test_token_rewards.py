"""Token-level rewards against plain-Python references on random arrays."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.rewards.token_rewards import (
    answer_span,
    combine_rewards,
    exact_match_reward,
    extract_answer_tokens,
    format_reward,
    length_penalty,
    majority_vote,
)

OPEN, CLOSE = (1, 2), (3,)


def find_all(row, length, pattern):
    k = len(pattern)
    return [t for t in range(length - k + 1) if tuple(row[t:t + k]) == tuple(pattern)]


def reference_span(row, length, open_ids, close_ids):
    """Plain-Python version of answer_span on one row with `length` valid tokens."""
    closes = find_all(row, length, close_ids)
    if not closes:
        return 0, 0, False
    opens = [t for t in find_all(row, length, open_ids) if t + len(open_ids) <= closes[-1]]
    if not opens:
        return 0, 0, False
    start = opens[-1] + len(open_ids)
    return start, min(c for c in closes if c >= start), True


@pytest.fixture(scope="module")
def random_batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, size=(64, 20)).astype(np.int32)  # small alphabet: many tags
    lengths = rng.integers(0, 21, size=64)
    mask = (np.arange(20)[None, :] < lengths[:, None]).astype(np.float32)
    return tokens, mask, lengths


def test_answer_span_matches_reference(random_batch):
    tokens, mask, lengths = random_batch
    start, end, found = jax.jit(answer_span, static_argnums=(2, 3))(tokens, mask, OPEN, CLOSE)
    expected = [reference_span(tokens[n], lengths[n], OPEN, CLOSE) for n in range(len(tokens))]
    np.testing.assert_array_equal(start, [e[0] for e in expected])
    np.testing.assert_array_equal(end, [e[1] for e in expected])
    np.testing.assert_array_equal(found, [e[2] for e in expected])
    assert 0 < int(found.sum()) < len(tokens)
    np.testing.assert_array_equal(format_reward(tokens, mask, OPEN, CLOSE), found.astype(np.float32))


def test_answer_span_worked_example():
    tokens = jnp.array([[9, 1, 2, 7, 3, 1, 2, 8, 8, 3, 1, 2, 5]], jnp.int32)
    start, end, found = answer_span(tokens, jnp.ones_like(tokens), OPEN, CLOSE)
    assert (int(start[0]), int(end[0]), bool(found[0])) == (7, 9, True)  # last pair; trailing open ignored
    start, end, found = answer_span(tokens, jnp.ones_like(tokens).at[0, 9].set(0), OPEN, CLOSE)
    assert (int(start[0]), int(end[0]), bool(found[0])) == (3, 4, True)  # masked close does not count


def test_exact_match_and_answer_tokens_match_reference(random_batch):
    tokens, mask, lengths = random_batch
    rng = np.random.default_rng(1)
    width = 4
    reference_tokens = np.zeros((len(tokens), width), np.int32)
    reference_mask = np.zeros((len(tokens), width), np.float32)
    expected_reward, expected_answers, expected_valid = [], [], []
    for n in range(len(tokens)):
        start, end, found = reference_span(tokens[n], lengths[n], OPEN, CLOSE)
        span = list(tokens[n, start:end]) if found else []
        # Half the rows get their own span as reference (when it fits), the rest a random one.
        reference = span if (found and len(span) <= width and n % 2 == 0) else list(
            rng.integers(0, 6, size=rng.integers(0, width + 1)))
        reference_tokens[n, :len(reference)] = reference
        reference_mask[n, :len(reference)] = 1
        expected_reward.append(float(found and span == reference))
        expected_valid.append(found and len(span) <= width)
        expected_answers.append((span + [0] * width)[:width] if expected_valid[-1] else None)
    reward = exact_match_reward(tokens, mask, reference_tokens, reference_mask, OPEN, CLOSE)
    np.testing.assert_array_equal(reward, expected_reward)
    assert 0 < float(reward.sum()) < len(tokens)
    answers, valid = extract_answer_tokens(tokens, mask, OPEN, CLOSE, width)
    np.testing.assert_array_equal(valid, expected_valid)
    for n, expected in enumerate(expected_answers):
        if expected is not None:
            np.testing.assert_array_equal(answers[n], expected)


def reference_majority(answers, valid):
    """Plain Python: first-occurrence tie-break over hashable answers."""
    votes = {}
    for g, (answer, ok) in enumerate(zip(answers, valid)):
        if ok:
            votes.setdefault(tuple(answer), []).append(g)
    if not votes:
        return 0, 0, [False] * len(answers)
    winner = max(votes.values(), key=lambda members: (len(members), -members[0]))
    agrees = [bool(ok) and tuple(a) == tuple(answers[winner[0]]) for a, ok in zip(answers, valid)]
    return winner[0], len(winner), agrees


def test_majority_vote_worked_example():
    # answers [3, 3, 5, None] -> y_hat = 3, maj_ratio = 0.5, r = [1, 1, 0, 0]
    answers = jnp.array([[[3], [3], [5], [0]]], jnp.int32)
    valid = jnp.array([[True, True, True, False]])
    index, count, agrees = majority_vote(answers, valid)
    assert int(answers[0, int(index[0]), 0]) == 3
    assert float(count[0]) / 4 == 0.5
    np.testing.assert_array_equal(agrees.astype(np.float32), [[1, 1, 0, 0]])


def test_majority_vote_ties_and_empty():
    answers = jnp.array([[[5], [3], [3], [5]], [[1], [2], [3], [4]], [[7], [7], [7], [7]]], jnp.int32)
    valid = jnp.array([[True] * 4, [True] * 4, [False] * 4])
    index, count, agrees = majority_vote(answers, valid)
    np.testing.assert_array_equal(index, [0, 0, 0])
    np.testing.assert_array_equal(count, [2, 1, 0])
    np.testing.assert_array_equal(agrees, [[1, 0, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]])


def test_majority_vote_matches_reference_on_random_answers():
    rng = np.random.default_rng(2)
    answers = rng.integers(0, 3, size=(50, 8, 2)).astype(np.int32)
    valid = rng.random((50, 8)) < 0.8
    index, count, agrees = jax.jit(majority_vote)(answers, valid)
    for b in range(50):
        expected_index, expected_count, expected_agrees = reference_majority(answers[b], valid[b])
        assert int(index[b]) == expected_index and int(count[b]) == expected_count
        np.testing.assert_array_equal(agrees[b], expected_agrees)


def test_length_penalty_and_combine_rewards():
    np.testing.assert_allclose(length_penalty(jnp.array([10, 15, 18, 25]), max_len=20, cache_len=10),
                               [0.0, -0.5, -0.8, -1.0])
    components = {"correct": jnp.array([1.0, 0.0]), "format_ok": jnp.array([1.0, 1.0]),
                  "length": jnp.array([0.0, -0.5])}
    total, returned = combine_rewards(components, {"correct": 1.0, "format_ok": 0.1, "length": 1.0})
    np.testing.assert_allclose(total, [1.1, -0.4], rtol=1e-6)
    assert returned is components
    with pytest.raises(KeyError, match="missing components"):
        combine_rewards(components, {"self_certainty": 1.0})
