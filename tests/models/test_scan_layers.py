"""`ModelConfig.scan_layers`: the stacked layout (`[L, ...]` parameters run by one `lax.scan`) computes what the
unrolled layers compute, on a tiny random fp32 model: logits, gradients (also rematerialised), greedy sampling
through the KV cache; HF safetensors and GGUF import / export and orbax checkpoints in the stacked layout; the
shardings of stacked parameters and caches; and a lowered program that holds one layer instead of L.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file
from test_gguf import FILE, tokenizer_tokens, write_tiny_gguf

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.models.checkpoint_io import export_hf_checkpoint, load_hf_checkpoint, relayout_params
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.convert import gguf_to_orbax
from jaxrl_self.models.pretrained import load_gguf, load_pretrained
from jaxrl_self.models.kv_cache import KVCache
from jaxrl_self.models.transformer import Transformer, model_graphdef, positions_from_mask
from jaxrl_self.parallel import MESH_AXES, activation_mesh, kv_cache_shardings, shard_batch, shard_state, state_shardings
from jaxrl_self.sampling.buckets import pad_prompts
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
TOL = 1e-5
HF_TOL = 1e-4  # against transformers, as in test_hf_parity.py
# every kind of parameter: q/k/v biases, q/k norms (1-D per layer), an untied output head
UNROLLED = ModelConfig(vocab_size=48, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
                       intermediate_size=48, tie_word_embeddings=False, attention_bias=True, qk_norm=True)
STACKED = dataclasses.replace(UNROLLED, scan_layers=True)


def flat(params) -> dict:
    """{state path: numpy array} of an `nnx.State`."""
    return {path: np.asarray(variable[...]) for path, variable in nnx.to_flat_state(params)}


def assert_stacked_equal(stacked, unrolled, num_layers, **tolerance):
    """`stacked` (a stacked-layout state) holds `unrolled`'s per-layer leaves stacked, and its other leaves."""
    unrolled, stacked = flat(unrolled), flat(stacked)
    assert len(unrolled) == len(stacked) + (num_layers - 1) * sum(path[0] == "layers" for path in stacked)
    for path, value in stacked.items():
        expected = np.stack([unrolled[("layers", i) + path[1:]] for i in range(num_layers)]) if path[0] == "layers" \
            else unrolled[path]
        np.testing.assert_allclose(value, expected, atol=tolerance.get("atol", 0), rtol=0, err_msg=str(path))


def batch(vocab_size, rows=3, length=9, seed=0):
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, vocab_size, (rows, length)), jnp.int32)
    mask = jnp.asarray(np.arange(length)[None] >= np.arange(rows)[:, None] * 2)  # left-padded rows
    return tokens, mask


@pytest.fixture(scope="module")
def models():
    """(unrolled graphdef, params, stacked graphdef, the same params stacked)."""
    graphdef, params = nnx.split(Transformer(UNROLLED, rngs=nnx.Rngs(0)))
    config, stacked_graphdef, stacked = relayout_params(UNROLLED, params, scan_layers=True)
    assert config == STACKED
    return graphdef, params, stacked_graphdef, stacked


def test_stacked_parameters_carry_the_layer_axis(models):
    graphdef, params, stacked_graphdef, stacked = models
    assert_stacked_equal(stacked, params, UNROLLED.num_layers)
    axes = {path: variable.get_metadata()["logical_axes"] for path, variable in nnx.to_flat_state(stacked)}
    assert axes[("layers", "self_attn", "q_proj")] == ("layers", "embed", "heads", "head_dim")
    assert axes[("layers", "input_layernorm")] == ("layers", "embed")
    assert axes[("embed_tokens",)] == ("vocab", "embed")
    assert stacked_graphdef == model_graphdef(STACKED)
    # both layouts initialise the same parameters from the same seed
    assert_stacked_equal(nnx.state(Transformer(STACKED, rngs=nnx.Rngs(0))), params, UNROLLED.num_layers)
    # and the unrolled layout comes back exactly
    config, back_graphdef, back = relayout_params(STACKED, stacked, scan_layers=False)
    assert config == UNROLLED and back_graphdef == graphdef
    jax.tree.map(np.testing.assert_array_equal, back, params)


def log_likelihood(graphdef, params, tokens, mask):
    """Mean log p(token t+1 | tokens <= t) over real tokens (a training pass: no cache)."""
    logits, _ = nnx.merge(graphdef, params)(tokens, positions_from_mask(mask), mask)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], axis=-1)[..., 0]
    return jnp.sum(logp * mask[:, 1:]) / jnp.sum(mask[:, 1:])


@pytest.mark.parametrize("remat", ["none", "full"])
def test_logits_and_gradients_match_the_unrolled_layers(models, remat):
    _, params, _, stacked = models
    graphdef, stacked_graphdef = (model_graphdef(dataclasses.replace(c, remat=remat)) for c in (UNROLLED, STACKED))
    tokens, mask = batch(UNROLLED.vocab_size)
    forward = jax.jit(lambda graphdef, params: nnx.merge(graphdef, params)(tokens, positions_from_mask(mask), mask)[0],
                      static_argnums=0)
    np.testing.assert_allclose(forward(stacked_graphdef, stacked), forward(graphdef, params), atol=TOL, rtol=0)
    loss_and_grads = jax.jit(jax.value_and_grad(log_likelihood, argnums=1), static_argnums=0)
    loss, grads = loss_and_grads(graphdef, params, tokens, mask)
    stacked_loss, stacked_grads = loss_and_grads(stacked_graphdef, stacked, tokens, mask)
    np.testing.assert_allclose(stacked_loss, loss, atol=TOL, rtol=TOL)
    assert_stacked_equal(stacked_grads, grads, UNROLLED.num_layers, atol=TOL)


def test_greedy_sampling_is_token_identical(models):
    """Prefill and decode through the stacked `[L, B, S, K, D]` cache, broadcast to a group of 2."""
    graphdef, params, stacked_graphdef, stacked = models
    tokens, mask = pad_prompts([[5, 9, 11, 3, 7], [4, 30], [12, 13, 14, 15, 16, 17, 18, 19, 20]], pad_id=0, multiple=4)
    sampling = SamplingConfig(max_new_tokens=10, eos_id=-1, pad_id=0, group_size=2, temperature=0.0)
    run = lambda graphdef, params: make_sampler(graphdef, sampling)(params, tokens, mask, jax.random.key(0))
    expected, got = run(graphdef, params), run(stacked_graphdef, stacked)
    np.testing.assert_array_equal(got.tokens, expected.tokens)
    np.testing.assert_allclose(got.logps, expected.logps, atol=TOL, rtol=0)
    cache = KVCache.zeros(STACKED, batch=3, length=7).repeat(2)
    assert cache.stacked and cache.keys.shape == (3, 6, 2, 7, 8)  # [L, B, K, S, D]


def test_hf_import_and_export_in_the_stacked_layout(make_hf_model, tmp_path):
    hf_model = make_hf_model("qwen3", num_attention_heads=8, num_key_value_heads=2, head_dim=16, num_hidden_layers=3,
                             tie_word_embeddings=False)
    source = str(tmp_path / "hf")
    hf_model.save_pretrained(source)
    config, graphdef, params = load_hf_checkpoint(source, scan_layers=True)
    assert config.scan_layers and params["layers"]["self_attn"]["q_norm"].shape == (3, 16)
    assert_stacked_equal(params, load_hf_checkpoint(source)[2], config.num_layers)

    tokens, mask = batch(config.vocab_size, seed=1)
    logits, _ = jax.jit(lambda params: nnx.merge(graphdef, params)(tokens, positions_from_mask(mask), mask))(params)
    with torch.no_grad():
        expected = hf_model(input_ids=torch.tensor(np.asarray(tokens), dtype=torch.long),
                            attention_mask=torch.tensor(np.asarray(mask), dtype=torch.long),
                            position_ids=torch.tensor(np.asarray(positions_from_mask(mask)), dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(np.asarray(logits)[np.asarray(mask)], expected[np.asarray(mask)], atol=HF_TOL, rtol=0)

    export_hf_checkpoint(config, params, str(tmp_path / "export"))
    original, exported = load_file(f"{source}/model.safetensors"), load_file(str(tmp_path / "export" / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, tensor in original.items():
        np.testing.assert_array_equal(exported[name], tensor, err_msg=name)


def test_gguf_and_orbax_imports_in_the_stacked_layout(make_hf_model, tmp_path):
    hf_model = make_hf_model("llama", vocab_size=len(tokenizer_tokens()[0]), tie_word_embeddings=False)
    path = str(tmp_path / FILE)
    write_tiny_gguf(path, hf_model)
    config, graphdef, params, _, _ = load_gguf(path)
    stacked_config, stacked_graphdef, stacked, _, _ = load_gguf(path, scan_layers=True)
    assert stacked_config == dataclasses.replace(config, scan_layers=True)
    assert stacked_graphdef == model_graphdef(stacked_config)
    assert_stacked_equal(stacked, params, config.num_layers)
    # an orbax model directory (stored unrolled) loads stacked too, through host memory
    gguf_to_orbax(path, str(tmp_path / "orbax"))
    orbax_config, orbax_graphdef, from_orbax, _ = load_pretrained(str(tmp_path / "orbax"), scan_layers=True)
    assert orbax_config.scan_layers and orbax_graphdef == stacked_graphdef
    jax.tree.map(np.testing.assert_array_equal, from_orbax, stacked)


def test_training_checkpoints_hold_stacked_state(models, tmp_path):
    _, _, _, stacked = models
    checkpointer = Checkpointer(tmp_path / "ckpt")
    checkpointer.save(1, {"params": stacked}, {"phase": "rl"})
    checkpointer.wait()
    step, restored, meta = checkpointer.restore_latest(lambda meta: {"params": stacked})
    checkpointer.close()
    assert (step, meta) == (1, {"phase": "rl"})
    jax.tree.map(np.testing.assert_array_equal, restored["params"], stacked)


def test_stacked_parameters_and_cache_are_sharded_but_for_the_layer_axis(models):
    """Shardings on a 2x2x2 mesh, and the gradients of a sharded pass (activations constrained inside the scan)."""
    _, _, graphdef, stacked = models
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), MESH_AXES)
    shardings = state_shardings(stacked, mesh)
    assert shardings["layers"]["self_attn"]["q_proj"].spec == P(None, "fsdp", "tensor")
    assert shardings["layers"]["mlp"]["down_proj"].spec == P(None, "tensor", "fsdp")
    cache = kv_cache_shardings(KVCache.zeros(STACKED, batch=8, length=12), mesh)
    assert cache.keys.spec == P(None, ("data", "fsdp"), "tensor")

    def sharded_loss(params, tokens, mask):
        with activation_mesh(mesh):
            return log_likelihood(graphdef, params, tokens, mask)

    tokens, mask = batch(STACKED.vocab_size, rows=4)
    grads = jax.jit(jax.grad(sharded_loss))(shard_state(stacked, mesh), *shard_batch((tokens, mask), mesh))
    expected = jax.jit(jax.grad(lambda params: log_likelihood(graphdef, params, tokens, mask)))(stacked)
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, atol=TOL, rtol=0), grads, expected)


def test_the_scanned_program_holds_one_layer():
    """A training forward of 8 layers lowers to one `while` over the stacked layers: well under half the text."""
    config = dataclasses.replace(UNROLLED, num_layers=8)
    tokens, mask = batch(config.vocab_size)

    def lowered_text(config):
        graphdef, params = nnx.split(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))
        forward = lambda params: nnx.merge(graphdef, params)(tokens, positions_from_mask(mask), mask)[0]
        return jax.jit(forward).lower(params).as_text()

    unrolled, scanned = lowered_text(config), lowered_text(dataclasses.replace(config, scan_layers=True))
    assert "stablehlo.while" in scanned and "stablehlo.while" not in unrolled
    assert len(scanned) < 0.5 * len(unrolled), (len(scanned), len(unrolled))
