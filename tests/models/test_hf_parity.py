"""Logit parity with transformers for tiny random Llama / Mistral / Qwen2 / Qwen3 checkpoints.

Each case: save_pretrained -> load_hf_checkpoint -> fp32 logits on a left-padded batch and step-by-step
KV-cache decoding logits match transformers within 1e-4 on real tokens; then export -> transformers
loads the export with no missing/unexpected keys -> same logits.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jaxrl_self.models.checkpoint_io import INDEX_FILE, export_hf_checkpoint, load_hf_checkpoint
from jaxrl_self.models.kv_cache import KVCache
from jaxrl_self.models.transformer import positions_from_mask

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
TOL = 1e-4
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

CASES = {
    "llama-gqa-untied": ("llama", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)),
    "llama3-rope-tied-legacy-spelling": ("llama", dict(num_attention_heads=4, num_key_value_heads=1,
                                                      tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE)),
    "mistral-mha-window4": ("mistral", dict(num_attention_heads=4, num_key_value_heads=4, sliding_window=4,
                                             tie_word_embeddings=False)),
    "qwen2-bias-tied": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
    "qwen3-headdim16-untied": ("qwen3", dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                                              tie_word_embeddings=False)),
}


def _to_legacy_rope_spelling(checkpoint_dir):
    """Rewrites config.json with the pre-transformers-5 top-level rope_theta + rope_scaling."""
    path = os.path.join(checkpoint_dir, "config.json")
    with open(path) as f:
        hf = json.load(f)
    rope = dict(hf.pop("rope_parameters"))
    hf["rope_theta"] = rope.pop("rope_theta")
    hf["rope_scaling"] = rope
    with open(path, "w") as f:
        json.dump(hf, f)


def _batch(vocab_size, lengths, total, seed):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(0, vocab_size, (len(lengths), total)).astype(np.int32)
    mask = np.zeros((len(lengths), total), bool)
    for i, n in enumerate(lengths):
        mask[i, total - n:] = True
    return tokens, mask


def _hf_logits(hf_model, tokens, mask):
    positions = np.asarray(positions_from_mask(jnp.asarray(mask)))
    with torch.no_grad():
        out = hf_model(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                       position_ids=torch.tensor(positions, dtype=torch.long))
    return out.logits.numpy()


def _max_diff(a, b, mask):
    return float(np.abs(np.asarray(a) - np.asarray(b))[mask].max())


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, make_hf_model, tmp_path_factory):
    model_type, overrides = CASES[request.param]
    hf_model = make_hf_model(model_type, **overrides)
    checkpoint_dir = str(tmp_path_factory.mktemp(request.param))
    hf_model.save_pretrained(checkpoint_dir)
    if "legacy-spelling" in request.param:
        _to_legacy_rope_spelling(checkpoint_dir)
    config, graphdef, params = load_hf_checkpoint(checkpoint_dir)
    forward = jax.jit(lambda params, *args: nnx.merge(graphdef, params)(*args))
    return request.param, hf_model, config, forward, params, checkpoint_dir


def test_config_flags(case):
    name, hf_model, config, *_ = case
    hf = hf_model.config
    assert config.architecture == hf.model_type
    head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    assert (config.num_heads, config.num_kv_heads, config.head_dim) == (hf.num_attention_heads, hf.num_key_value_heads, head_dim)
    assert config.tie_word_embeddings == hf.tie_word_embeddings
    assert config.attention_bias == (hf.model_type == "qwen2")
    assert config.qk_norm == (hf.model_type == "qwen3")
    if "llama3" in name:
        assert config.rope_theta == 500000.0 and config.rope_scaling_dict()["rope_type"] == "llama3"


def test_padded_batch_logits_match(case):
    _, hf_model, config, forward, params, _ = case
    tokens, mask = _batch(config.vocab_size, lengths=[10, 7, 3], total=10, seed=1)
    logits, cache = forward(params, jnp.asarray(tokens), positions_from_mask(jnp.asarray(mask)), jnp.asarray(mask))
    assert cache is None and logits.dtype == jnp.float32
    assert _max_diff(logits, _hf_logits(hf_model, tokens, mask), mask) <= TOL


def test_kv_cache_decoding_logits_match(case):
    """Prefill a left-padded prompt into a cache, then feed one token at a time (as the sampler does)."""
    _, hf_model, config, forward, params, _ = case
    prompt_len, steps = 7, 5
    tokens, mask = _batch(config.vocab_size, lengths=[7 + steps, 5 + steps, 2 + steps], total=prompt_len + steps, seed=2)
    reference = _hf_logits(hf_model, tokens, mask)
    prompt_mask = jnp.asarray(mask[:, :prompt_len])
    kv_mask = jnp.asarray(mask)  # prompt mask, then every decoded slot is real
    cache = KVCache.zeros(config, tokens.shape[0], prompt_len + steps)
    positions = positions_from_mask(prompt_mask)
    logits, cache = forward(params, jnp.asarray(tokens[:, :prompt_len]), positions, kv_mask, cache, 0)
    step_logits = [logits[:, -1]]
    for t in range(steps - 1):
        position = positions[:, -1:] + 1 + t
        logits, cache = forward(params, jnp.asarray(tokens[:, prompt_len + t:prompt_len + t + 1]), position, kv_mask, cache,
                                jnp.int32(prompt_len + t))
        step_logits.append(logits[:, 0])
    decoded = np.stack([np.asarray(x) for x in step_logits], axis=1)  # logits at slots prompt_len-1 .. end-2
    assert _max_diff(decoded, reference[:, prompt_len - 1:-1], np.ones(decoded.shape[:2], bool)) <= TOL


def test_export_round_trip(case, tmp_path):
    """load -> export (sharded for one case) -> transformers loads it cleanly -> same logits."""
    name, hf_model, config, _, params, _ = case
    sharded = name.startswith("qwen2")
    out_dir = str(tmp_path / "export")
    written = export_hf_checkpoint(config, params, out_dir, max_shard_bytes=40_000 if sharded else 2**30)
    assert (INDEX_FILE in written) == sharded
    if sharded:
        assert sum(f.endswith(".safetensors") for f in written) > 2
        assert all(os.path.getsize(os.path.join(out_dir, f)) < 60_000 for f in written if f.endswith(".safetensors"))
    reloaded, info = transformers.AutoModelForCausalLM.from_pretrained(out_dir, output_loading_info=True,
                                                                      attn_implementation="eager")
    assert type(reloaded) is type(hf_model)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tokens, mask = _batch(config.vocab_size, lengths=[9, 4], total=9, seed=3)
    np.testing.assert_allclose(_hf_logits(reloaded.eval(), tokens, mask)[mask], _hf_logits(hf_model, tokens, mask)[mask],
                               atol=1e-6, rtol=0)
    config_again, _, params_again = load_hf_checkpoint(out_dir)
    assert config_again == config
    jax.tree.map(np.testing.assert_array_equal, params_again, params)
