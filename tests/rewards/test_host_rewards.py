"""Host verifier callbacks under jit: failures give reward 0 and are counted."""
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.rewards.countdown import countdown_reference, countdown_verifier
from jaxrl_self.rewards.host import (
    FAILURE_REASONS,
    decode_reference,
    encode_references,
    forget_logged_failures,
    make_host_batch_reward_fn,
    make_host_reward_fn,
)


def decode_chars(token_ids):
    return "".join(chr(t) for t in token_ids)


def encode_batch(texts, width):
    tokens = np.zeros((len(texts), width), np.int32)
    mask = np.zeros((len(texts), width), np.float32)
    for row, text in enumerate(texts):
        tokens[row, :len(text)] = [ord(c) for c in text]
        mask[row, :len(text)] = 1.0
    return jnp.asarray(tokens), jnp.asarray(mask)


def failure_counts(**counts):
    return [counts.get(name, 0) for name in FAILURE_REASONS]


def misbehaving_verifier(completion, reference):
    """Behaviour chosen by the completion text."""
    if completion == "raise":
        raise RuntimeError("boom")
    if completion == "sleep":
        time.sleep(1.0)
    if completion == "nan":
        return {"reward": float("nan"), "correct": 0.0, "format_ok": 1.0}
    if completion == "missing":
        return {"reward": 1.0}
    if completion == "garbage":
        return "not a mapping"
    correct = float(completion == reference)
    return {"reward": correct, "correct": correct, "format_ok": 1.0, "extra": 5.0}


def test_reference_encoding_round_trip():
    refs = ["3,5,2=16", "", "héllo"]
    encoded = encode_references(refs, 12)
    assert encoded.shape == (3, 12) and encoded.dtype == np.uint8
    assert [decode_reference(row) for row in encoded] == refs
    with pytest.raises(ValueError, match="reference 1 is 13 bytes"):
        encode_references(["ok", "x" * 13], 12)


@pytest.mark.parametrize("num_workers", [0, 3])
def test_failures_give_zero_and_are_counted(num_workers):
    texts = ["42", "raise", "nan", "41", "missing", "garbage", "42"]
    tokens, mask = encode_batch(texts, 10)
    refs = jnp.asarray(encode_references(["42"] * len(texts), 8))
    reward_fn = jax.jit(make_host_reward_fn(misbehaving_verifier, decode_chars, num_workers=num_workers))
    out = reward_fn(tokens, mask, refs)
    np.testing.assert_array_equal(out["reward"], [1, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(out["format_ok"], [1, 0, 0, 1, 0, 0, 1])
    assert out["reward"].dtype == jnp.float32 and out["reward"].shape == (7,)
    np.testing.assert_array_equal(out["verifier_failures"], failure_counts(exception=1, bad_output=3))
    assert set(out) == {"reward", "correct", "format_ok", "verifier_failures"}


def test_timeout_with_workers():
    texts = ["sleep", "42", "sleep", "42", "41"]
    tokens, mask = encode_batch(texts, 8)
    refs = jnp.asarray(encode_references(["42"] * len(texts), 4))
    reward_fn = jax.jit(make_host_reward_fn(misbehaving_verifier, decode_chars, num_workers=2,
                                            timeout_s=0.2))
    started = time.monotonic()
    out = jax.block_until_ready(reward_fn(tokens, mask, refs))
    assert time.monotonic() - started < 0.9
    np.testing.assert_array_equal(out["reward"], [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(out["verifier_failures"], failure_counts(timeout=2))


def test_decode_sees_only_masked_tokens_and_vmap():
    tokens, mask = encode_batch(["(3+5)*2", "3*5+2"], 12)
    mask = mask.at[0, 0].set(0.0)  # hide "(" → "3+5)*2" does not parse
    refs = jnp.asarray(encode_references([countdown_reference([3, 5, 2], 16)] * 2, 16))

    def verifier(completion, reference):
        return countdown_verifier(f"<answer>{completion}</answer>", reference)

    reward_fn = make_host_reward_fn(verifier, decode_chars)
    out = jax.jit(reward_fn)(tokens, mask, refs)
    np.testing.assert_allclose(out["reward"], [0.1, 0.1])
    full_mask = jnp.ones_like(mask) * (tokens > 0)
    batched = jax.jit(jax.vmap(reward_fn))(jnp.stack([tokens, tokens]), jnp.stack([mask, full_mask]),
                                            jnp.stack([refs, refs]))
    np.testing.assert_allclose(batched["reward"], [[0.1, 0.1], [1.0, 0.1]])
    assert batched["verifier_failures"].shape == (2, len(FAILURE_REASONS))


def test_sharded_over_8_devices_matches_direct_calls():
    """Rows of a batch split over 8 devices: the callback gives what calling the verifier gives."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from jaxrl_self.rewards.math_verify import math_score

    assert jax.device_count() == 8  # tests/conftest.py forces 8 host devices
    answers = [r"\boxed{\frac12}", "#### 1,000", "The answer is 7 cm.", r"\boxed{x+1}", "no answer", r"\boxed{-3}",
               "The answer is 0.25", r"\boxed{(1,2)}"] * 2
    refs = ["0.5", "1000", "7", "x+2", "4", "-3", r"\frac14", "(1, 2)"] * 2
    tokens, mask = encode_batch(answers, 24)
    ref_bytes = jnp.asarray(encode_references(refs, 8))
    rows = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data"))
    tokens, mask, ref_bytes = (jax.device_put(x, rows) for x in (tokens, mask, ref_bytes))
    direct = [math_score(a, r) for a, r in zip(answers, refs)]  # also starts the math-verify worker
    reward_fn = jax.jit(make_host_reward_fn(math_score, decode_chars, num_workers=2, timeout_s=60.0))
    out = reward_fn(tokens, mask, ref_bytes)
    for name in ("reward", "correct", "format_ok"):
        np.testing.assert_array_equal(out[name], [d[name] for d in direct], err_msg=name)
    assert sorted(set(np.asarray(out["correct"]).tolist())) == [0.0, 1.0]
    np.testing.assert_array_equal(out["verifier_failures"], failure_counts())


def test_the_first_failure_of_each_reason_is_logged_once(caplog):
    texts = ["raise", "garbage", "raise", "42"]
    tokens, mask = encode_batch(texts, 8)
    refs = jnp.asarray(encode_references(["42"] * len(texts), 4))
    reward_fn = jax.jit(make_host_reward_fn(misbehaving_verifier, decode_chars))
    forget_logged_failures()
    with caplog.at_level(logging.WARNING, logger="jaxrl_self.rewards.host"):
        for _ in range(3):
            out = reward_fn(tokens, mask, refs)
            np.testing.assert_array_equal(out["verifier_failures"], failure_counts(exception=2, bad_output=1))
    firsts = [r for r in caplog.records if "misbehaving_verifier failed" in r.getMessage()]
    assert [bool(r.exc_info) for r in firsts] == [True, False]  # the traceback once, the bad output once
    assert "RuntimeError: boom" in caplog.text and "'not a mapping'" in caplog.text
    assert sum("verifier failures in 3 of 4 rows" in r.getMessage() for r in caplog.records) == 3


def batch_reward(completions, prompts, references):
    """Behaviour chosen by the first completion; otherwise len(prompt) + (completion == reference)."""
    if completions[0] == "raise":
        raise RuntimeError("batch boom")
    if completions[0] == "short":
        return [1.0] * (len(completions) - 1)
    if completions[0] == "strings":
        return ["1"] * len(completions)
    return [float("nan") if c == "nan" else len(p) + float(c == r) for c, p, r in zip(completions, prompts, references)]


def test_batch_reward_sees_texts_and_failures_are_contained(caplog):
    prompt_tokens, prompt_mask = encode_batch(["1+1=", "2+2=", "3+3="], 6)
    refs = jnp.asarray(encode_references(["2", "4", "6"], 4))
    reward_fn = jax.jit(make_host_batch_reward_fn(batch_reward, decode_chars))
    forget_logged_failures()

    def run(texts):
        tokens, mask = encode_batch(texts, 8)
        return reward_fn(tokens, mask, prompt_tokens, prompt_mask, refs)

    out = run(["2", "5", "nan"])
    np.testing.assert_array_equal(out["reward"], [5.0, 4.0, 0.0])
    np.testing.assert_array_equal(out["scored"], [1.0, 1.0, 0.0])
    np.testing.assert_array_equal(out["verifier_failures"], failure_counts(bad_output=1))
    with caplog.at_level(logging.WARNING, logger="jaxrl_self.rewards.host"):
        for texts, counts in [(["raise", "4", "6"], failure_counts(exception=3)),
                              (["raise", "4", "6"], failure_counts(exception=3)),
                              (["short", "4", "6"], failure_counts(bad_output=3)),
                              (["strings", "4", "6"], failure_counts(bad_output=3))]:
            out = run(texts)
            np.testing.assert_array_equal(out["reward"], [0.0, 0.0, 0.0])
            np.testing.assert_array_equal(out["scored"], [0.0, 0.0, 0.0])
            np.testing.assert_array_equal(out["verifier_failures"], counts)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "RuntimeError: batch boom" in caplog.text
    bad_outputs = [r.getMessage() for r in caplog.records if "batch_reward failed (bad_output" in r.getMessage()]
    assert len(bad_outputs) == 1 and "non-finite reward nan for row 2" in bad_outputs[0]  # the first one only
    prompts_seen = []
    recording = make_host_batch_reward_fn(lambda c, p, r: prompts_seen.extend(p) or [0.0] * len(c), decode_chars)
    tokens, mask = encode_batch(["a", "b", "c"], 4)
    batched = jax.jit(jax.vmap(recording))(*(jnp.stack([x, x]) for x in (tokens, mask, prompt_tokens, prompt_mask, refs)))
    assert batched["reward"].shape == (2, 3) and batched["verifier_failures"].shape == (2, len(FAILURE_REASONS))
    assert prompts_seen == ["1+1=", "2+2=", "3+3="] * 2
