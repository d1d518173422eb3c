"""Splash attention (`models/splash.py`) against the einsum attention it replaces.

On CPU the Pallas kernel runs in interpret mode: the same kernel program, executed by XLA, so the
comparison checks its masking (causal, padding as segment ids, sliding window), grouped-query
heads, scaling and the `shard_map` placement on a mesh. That it lowers to the TPU kernel is checked
by lowering for an abstract TPU slice (libtpu, as tests/parallel/test_aot_tpu.py).
"""
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.splash import splash_attention
from jaxrl_self.models.attention import attention_implementation, grouped_attention
from jaxrl_self.parallel.mesh import make_mesh
from jaxrl_self.parallel.rules import activation_mesh

B, T, H, K, D = 4, 256, 4, 2, 32


def _inputs(seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (B, T, H, D))
    k = jax.random.normal(kk, (B, T, K, D))
    v = jax.random.normal(kv, (B, T, K, D))
    slots = jnp.arange(T)[None]
    left_pad, length = jnp.array([[0], [5], [130], [0]]), jnp.array([[256], [200], [256], [129]])
    kv_mask = (slots >= left_pad) & (slots < length)  # left-padded prompts, right-padded completions
    return q, k, v, kv_mask


def _reference(q, k, v, kv_mask, window=None):
    query, key = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
    allowed = key <= query
    if window is not None:
        allowed &= key > query - window
    return grouped_attention(q, jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2), allowed[None] & kv_mask[:, None, :])


def _loss(attend, kv_mask):
    real = kv_mask[:, :, None, None]  # padding queries' outputs are never used
    return lambda q, k, v: jnp.sum(jnp.where(real, attend(q, k, v), 0.0) ** 2)


@pytest.mark.parametrize("window", [None, 48])
def test_splash_equals_einsum_attention_and_its_gradients(window):
    q, k, v, kv_mask = _inputs()
    real = kv_mask[:, :, None, None]
    out = splash_attention(q, k, v, kv_mask, window)
    expected = _reference(q, k, v, kv_mask, window)
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, expected, 0), atol=2e-6)
    grads = jax.grad(_loss(lambda *a: splash_attention(*a, kv_mask, window), kv_mask), argnums=(0, 1, 2))(q, k, v)
    expected_grads = jax.grad(_loss(lambda *a: _reference(*a, kv_mask, window), kv_mask), argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads, expected_grads):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("mesh_shape", [(1, 4, 1), (2, 1, 2), (1, 2, 4)])
def test_splash_on_a_mesh_runs_per_chip_and_equals_one_device(mesh_shape):
    """Rows over data+fsdp, heads over tensor; tensor=4 with 2 kv heads repeats the kv heads."""
    q, k, v, kv_mask = _inputs(1)
    data, fsdp, tensor = mesh_shape
    mesh = make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)),
                     devices=jax.devices()[: data * fsdp * tensor])

    @jax.jit
    def attend(q, k, v, kv_mask):
        with activation_mesh(mesh):
            return splash_attention(q, k, v, kv_mask)

    rows = NamedSharding(mesh, P(("data", "fsdp")))
    out = attend(*(jax.device_put(x, rows) for x in (q, k, v, kv_mask)))
    real = kv_mask[:, :, None, None]
    np.testing.assert_allclose(np.where(real, out, 0), np.where(real, splash_attention(q, k, v, kv_mask), 0), atol=1e-6)


def test_auto_picks_splash_for_tpu_training_passes_only():
    config = ModelConfig(vocab_size=64, attention="auto")
    assert attention_implementation(config, training_tokens=256) == "xla"  # CPU
    assert attention_implementation(ModelConfig(vocab_size=64, attention="splash"), training_tokens=200) == "xla"
    assert attention_implementation(ModelConfig(vocab_size=64, attention="splash"), training_tokens=None) == "xla"
    spec = importlib.util.spec_from_file_location(
        "aot_memory", pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "aot_memory.py")
    aot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aot)
    try:
        mesh, _ = aot.mesh_for("v5e:2x2")
    except aot.LibTPUMissing as error:
        pytest.fail(f"{error} (the test extra lists it: pip install -e '.[test]')")
    with activation_mesh(mesh):
        assert attention_implementation(config, training_tokens=256) == "splash"
        assert attention_implementation(config, training_tokens=None) == "xla"  # cached decode steps

    def attend(q, k, v, kv_mask):
        with activation_mesh(mesh):
            return splash_attention(q, k, v, kv_mask)

    rows = NamedSharding(mesh, P(("data", "fsdp")))
    shapes = [jax.ShapeDtypeStruct(x.shape, jnp.bfloat16 if x.ndim == 4 else x.dtype, sharding=rows) for x in _inputs()]
    text = jax.jit(attend).trace(*shapes).lower(lowering_platforms=("tpu",)).as_text()
    assert "tpu_custom_call" in text  # the Mosaic kernel, not interpret mode
