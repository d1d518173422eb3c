"""The memory options of docs/scaling.md change how the learner runs, not what it computes.

Per-layer remat ("full", "save_dots"), log-probs from the output projection in chunks (a chunk
that does not divide T, so padding is exercised), the fused attention call, layers stacked and
scanned (gradients compared after unstacking), and a bf16-stored
frozen reference give the same fp32 GRPO loss, metrics and gradients as the plain path (1e-5),
and the chunked path never builds a `[rows, T, vocab]` array.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_self.config import load_config_file
from jaxrl_self.models.checkpoint_io import relayout_params
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.transformer import cast_matrices, model_graphdef
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.train import policy
from jaxrl_self.train.policy import CPU_CHUNKED_VOCAB, CPU_LOGPROB_CHUNK, completion_logprobs, logprob_chunk_for
from jaxrl_self.train.rl_step import policy_loss
from jaxrl_self.train.state import init_model
from jaxrl_self.train.value_head import completion_logprobs_and_values, init_value_head

ROWS, PROMPT_LEN, NEW_TOKENS, VOCAB = 6, 5, 7, 97
BASE = ModelConfig(vocab_size=VOCAB, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
                   intermediate_size=48, max_position_embeddings=32)
OPTIONS = {
    "remat full": dict(remat="full"),
    "remat save_dots": dict(remat="save_dots"),
    "chunked log-probs (3 of 7)": dict(logprob_chunk=3),
    "fused attention": dict(attention="dot_product"),
    "scanned layers": dict(scan_layers=True),
    "all together": dict(remat="full", logprob_chunk=4, attention="dot_product", scan_layers=True),
}


@pytest.fixture(scope="module")
def setup():
    graphdef, params = init_model(BASE, seed=0)
    rng = np.random.default_rng(0)
    prompt_mask = np.arange(PROMPT_LEN)[None] >= rng.integers(0, PROMPT_LEN - 1, (ROWS, 1))  # left-padded
    lengths = rng.integers(1, NEW_TOKENS + 1, (ROWS, 1))
    batch = RolloutBatch(
        prompt_tokens=jnp.asarray(rng.integers(0, VOCAB, (ROWS, PROMPT_LEN)), jnp.int32),
        prompt_mask=jnp.asarray(prompt_mask),
        completion_tokens=jnp.asarray(rng.integers(0, VOCAB, (ROWS, NEW_TOKENS)), jnp.int32),
        completion_mask=jnp.asarray(np.arange(NEW_TOKENS)[None] < lengths),
        advantages=jnp.asarray(rng.normal(size=ROWS), jnp.float32),
        old_logp=jnp.asarray(-4.0 + 0.1 * rng.normal(size=(ROWS, NEW_TOKENS)), jnp.float32),
        ref_logp=jnp.asarray(-4.0 + 0.1 * rng.normal(size=(ROWS, NEW_TOKENS)), jnp.float32),
    )
    rl = load_config_file("configs/default.py").rl
    rl.entropy_coef = 0.01  # the entropy path's gradient is compared too
    mask = batch.completion_mask.astype(jnp.float32)
    denominators = (jnp.sum(jnp.any(mask > 0, -1).astype(jnp.float32)), jnp.sum(mask))

    def loss_and_grads(model_config):
        """Loss, metrics and gradients; with scanned layers the params are stacked for the pass and
        the gradients unstacked for the comparison."""
        def loss_fn(p):
            return policy_loss(nnx.merge(model_graphdef(model_config), p), batch, rl, *denominators)
        own = relayout_params(BASE, params, True)[2] if model_config.scan_layers else params
        (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(own)
        if model_config.scan_layers:
            grads = relayout_params(model_config, grads, False)[2]
        return (loss, metrics), grads

    return params, batch, loss_and_grads, loss_and_grads(BASE)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_options_give_the_plain_loss_metrics_and_gradients(setup, name):
    params, batch, loss_and_grads, ((loss_ref, metrics_ref), grads_ref) = setup
    (loss, metrics), grads = loss_and_grads(dataclasses.replace(BASE, **OPTIONS[name]))
    assert float(loss_ref) != 0.0
    np.testing.assert_allclose(float(loss), float(loss_ref), atol=1e-5, rtol=1e-5)
    for key in metrics_ref:
        np.testing.assert_allclose(float(metrics[key]), float(metrics_ref[key]), atol=1e-5, rtol=1e-5, err_msg=key)
    flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(grads_ref)
    assert max(float(jnp.max(jnp.abs(g))) for g in flat_ref) > 1e-3  # a gradient that could differ
    for g, g_ref in zip(flat, flat_ref):
        np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=1e-5, rtol=1e-4)


def test_value_head_path_matches_with_chunks(setup):
    params, batch, _, _ = setup
    args = [batch.prompt_tokens, batch.prompt_mask, batch.completion_tokens, batch.completion_mask]
    head = init_value_head(BASE.hidden_size)
    head = {"kernel": head["kernel"] + 0.1, "bias": head["bias"]}
    plain = completion_logprobs_and_values(nnx.merge(model_graphdef(BASE), params), head, *args, 0.7)
    chunked = completion_logprobs_and_values(nnx.merge(model_graphdef(dataclasses.replace(BASE, logprob_chunk=2)), params),
                                             head, *args, 0.7)
    for a, b in zip(plain, chunked):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_chunked_log_probs_hold_no_full_logits_array(setup):
    """In the chunked path's forward and backward, no array has T*vocab elements per row."""
    params, batch, _, _ = setup
    args = [batch.prompt_tokens, batch.prompt_mask, batch.completion_tokens, batch.completion_mask]

    def shapes_of(model_config):
        loss = lambda p: jnp.sum(completion_logprobs(nnx.merge(model_graphdef(model_config), p), *args, with_entropy=True)[0])
        text = jax.jit(jax.grad(loss)).lower(params).as_text()
        return f"{ROWS}x{NEW_TOKENS}x{VOCAB}xf32" in text

    assert shapes_of(BASE)  # the plain path does build [rows, T, vocab]: the check can fail
    assert not shapes_of(dataclasses.replace(BASE, logprob_chunk=3))


def test_auto_chunk_on_cpu_only_and_from_a_large_vocabulary(monkeypatch):
    """logprob_chunk -1 ("auto") chunks when compiling for CPU from CPU_CHUNKED_VOCAB on, never on an
    accelerator or below it; explicit values are kept on every platform."""
    assert BASE.logprob_chunk == -1  # the default
    assert logprob_chunk_for(-1, CPU_CHUNKED_VOCAB) == CPU_LOGPROB_CHUNK > 0
    assert logprob_chunk_for(-1, CPU_CHUNKED_VOCAB - 1) == 0
    assert logprob_chunk_for(0, 10 * CPU_CHUNKED_VOCAB) == 0 and logprob_chunk_for(3, 10) == 3
    for platform in ("tpu", "gpu"):
        monkeypatch.setattr(policy, "target_platform", lambda: platform)
        assert logprob_chunk_for(-1, 10 * CPU_CHUNKED_VOCAB) == 0 and logprob_chunk_for(5, 10) == 5


def test_bf16_reference_gives_the_same_log_probs(setup):
    """A bf16 model reads its matrices in bf16 anyway: storing the reference in bf16 changes nothing."""
    params, batch, _, _ = setup
    args = [batch.prompt_tokens, batch.prompt_mask, batch.completion_tokens, batch.completion_mask]
    bf16 = model_graphdef(dataclasses.replace(BASE, dtype="bfloat16"))
    stored = cast_matrices(params, jnp.bfloat16)
    assert {x.dtype for x in jax.tree.leaves(stored) if x.ndim >= 2} == {jnp.dtype(jnp.bfloat16)}
    full = completion_logprobs(nnx.merge(bf16, params), *args)[0]
    lean = completion_logprobs(nnx.merge(bf16, stored), *args)[0]
    np.testing.assert_array_equal(np.asarray(full), np.asarray(lean))
