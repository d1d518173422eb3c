"""LoRA adapters (`models.lora`): a fresh adapter leaves the base model's logits bit-identical, the
adapters are `LoRAParam`s of the shapes and logical axes of their projections, a nonzero adapter
equals its merged weights, adapter dropout acts on the adapters' input in forwards given a key only
(PEFT's inverted dropout, checked against NumPy), and bad `config.model.lora` values are ConfigErrors."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_self.config import ConfigError, build_config
from jaxrl_self.models.config import ModelConfig, lora_config_from
from jaxrl_self.models.lora import Adapter, LoRAConfig, LoRAParam, adapted, join_adapters, merged_weights, split_adapters
from jaxrl_self.models.transformer import Transformer, init_adapters

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE = ModelConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                   intermediate_size=24, attention_bias=True)
TOKENS = jnp.array([[3, 7, 1, 9, 2, 5], [4, 4, 8, 0, 6, 1]])
POSITIONS = jnp.broadcast_to(jnp.arange(6), (2, 6))
MASK = jnp.ones((2, 6), bool)


def logits(config, params):
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))
    return np.asarray(jax.jit(lambda p: nnx.merge(graphdef, p)(TOKENS, POSITIONS, MASK)[0])(params))


def perturbed(adapters, seed=1):
    """The adapters with every entry moved by N(0, 0.1): B no longer zero."""
    leaves, tree = jax.tree.flatten(adapters)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def test_zero_initialised_adapters_give_bit_identical_logits(scan_layers=False):
    base = dataclasses.replace(BASE, scan_layers=scan_layers)
    config = dataclasses.replace(base, lora=LoRAConfig(rank=4, alpha=8.0))
    base_params = nnx.state(Transformer(base, rngs=nnx.Rngs(0)))
    params = nnx.state(Transformer(config, rngs=nnx.Rngs(0)))
    adapters, frozen = split_adapters(params)
    # the same seed draws the same base with or without adapters
    jax.tree.map(np.testing.assert_array_equal, base_params, frozen)
    assert len(jax.tree.leaves(adapters)) == 2 * 7 * base.num_layers
    assert all(isinstance(v, LoRAParam) for v in jax.tree.leaves(adapters, is_leaf=lambda x: isinstance(x, nnx.Variable)))
    assert not any(np.any(b) for path, b in nnx.to_flat_state(adapters) if path[-1] == "b")  # B = 0
    assert any(np.any(a) for path, a in nnx.to_flat_state(adapters) if path[-1] == "a")
    assert np.array_equal(logits(config, params), logits(base, base_params))
    # and a trained adapter does change them
    assert not np.allclose(logits(config, join_adapters(frozen, perturbed(adapters))), logits(base, base_params), atol=1e-3)


def test_adapter_shapes_axes_and_targets():
    config = dataclasses.replace(BASE, num_layers=1, lora=LoRAConfig(rank=3, targets=("q_proj", "o_proj", "down_proj")))
    adapters, _ = split_adapters(nnx.state(Transformer(config, rngs=nnx.Rngs(0))))
    flat = {".".join(map(str, path)): v for path, v in nnx.to_flat_state(adapters)}
    e, h, d, f = BASE.hidden_size, BASE.num_heads, BASE.head_dim, BASE.intermediate_size
    expected = {
        "layers.0.self_attn.q_proj_lora.a": ((e, 3), ("embed", None)),
        "layers.0.self_attn.q_proj_lora.b": ((3, h, d), (None, "heads", "head_dim")),
        "layers.0.self_attn.o_proj_lora.a": ((h, d, 3), ("heads", "head_dim", None)),
        "layers.0.self_attn.o_proj_lora.b": ((3, e), (None, "embed")),
        "layers.0.mlp.down_proj_lora.a": ((f, 3), ("mlp", None)),
        "layers.0.mlp.down_proj_lora.b": ((3, e), (None, "embed")),
    }
    assert {name: (v.shape, v.get_metadata()["logical_axes"]) for name, v in flat.items()} == expected
    # a pretrained base gets adapters of the same structure, drawn the same way: B = 0, A within ±1/sqrt(fan in)
    fresh = init_adapters(config, 0)
    assert jax.tree.structure(fresh) == jax.tree.structure(adapters)
    for (path, new), (_, built) in zip(nnx.to_flat_state(fresh), nnx.to_flat_state(adapters)):
        assert new.shape == built.shape and new.get_metadata() == built.get_metadata()
        bound = np.abs(built[...]).max()
        assert (not np.any(new[...])) if path[-1] == "b" else 0.5 * bound < np.abs(new[...]).max() <= 1 / np.sqrt(
            np.prod(new.shape[:-1]))
    jax.tree.map(np.testing.assert_array_equal, init_adapters(config, 0), fresh)  # deterministic
    assert not np.array_equal(*(nnx.to_flat_state(init_adapters(config, s))[0][1][...] for s in (0, 1)))


def test_merged_weights_equal_base_plus_adapter(scan_layers=True):
    """Stacked layers (`ModelConfig.scan_layers`); tests/models/test_lora_export.py merges unrolled ones."""
    base = dataclasses.replace(BASE, scan_layers=scan_layers)
    config = dataclasses.replace(base, lora=LoRAConfig(rank=4, alpha=12.0))
    adapters, frozen = split_adapters(nnx.state(Transformer(config, rngs=nnx.Rngs(0))))
    params = join_adapters(frozen, perturbed(adapters))
    merged = merged_weights(params, config.lora)
    assert not split_adapters(merged)[1]  # no adapters left: the state of the base model
    np.testing.assert_allclose(logits(base, merged), logits(config, params), atol=2e-5, rtol=2e-5)
    # by hand for one projection: W + alpha/r * A B
    flat, out = dict(nnx.to_flat_state(params)), dict(nnx.to_flat_state(merged))
    layer = ("layers", "mlp") if scan_layers else ("layers", 0, "mlp")
    a, b = flat[layer + ("up_proj_lora", "a")][...], flat[layer + ("up_proj_lora", "b")][...]
    product = np.einsum("...er,...rf->...ef", a, b)
    np.testing.assert_allclose(out[layer + ("up_proj",)][...], flat[layer + ("up_proj",)][...] + 3.0 * product, rtol=1e-6,
                               atol=1e-6)


class Projection(nnx.Module):
    """A module with one adapted projection, "up_proj" `[E] -> [F]` (`models.lora.adapted`)."""

    def __init__(self, e, f, lora_config, rngs):
        self.up_proj_lora = Adapter((e,), (f,), ("embed",), ("mlp",), lora_config, rngs)


def test_adapter_dropout_matches_numpy_inverted_dropout():
    """PEFT's `scale * B(A(dropout(x)))`: an identity adapter shows the mask (keep rate ~ 1 - p, kept
    entries x / (1 - p), the rest 0); a random one equals NumPy's update with that mask; `y` (the
    base path) is added untouched; no key (or p = 0) leaves the adapter's input as it is."""
    p, e, rows = 0.3, 16, 4000
    x = jax.random.normal(jax.random.key(0), (rows, e))
    y = jax.random.normal(jax.random.key(1), (rows, e))
    key = jax.random.key(7)
    identity = Projection(e, e, LoRAConfig(rank=e, alpha=e, dropout=p), nnx.Rngs(0))  # scale 1
    identity.up_proj_lora.a[...], identity.up_proj_lora.b[...] = jnp.eye(e), jnp.eye(e)
    dropped = np.asarray(adapted(identity, "up_proj", x, jnp.zeros_like(y), 1, key))
    kept = dropped != 0
    assert abs(kept.mean() - (1 - p)) < 0.01  # 64,000 entries: the std of the rate is 0.002
    np.testing.assert_allclose(dropped[kept], np.asarray(x)[kept] / (1 - p), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(adapted(identity, "up_proj", x, y, 1, key)), np.asarray(y) + dropped)
    np.testing.assert_array_equal(np.asarray(adapted(identity, "up_proj", x, y, 1)), np.asarray(y + x))  # no key: no dropout
    assert not np.array_equal(np.asarray(adapted(identity, "up_proj", x, y, 1, jax.random.key(8))) - np.asarray(y), dropped)

    f, rank, alpha = 24, 4, 6.0
    module = Projection(e, f, LoRAConfig(rank=rank, alpha=alpha, dropout=p), nnx.Rngs(0))
    a, b = (np.asarray(jax.random.normal(jax.random.key(k), shape)) for k, shape in ((2, (e, rank)), (3, (rank, f))))
    module.up_proj_lora.a[...], module.up_proj_lora.b[...] = a, b
    update = np.asarray(adapted(module, "up_proj", x, jnp.zeros((rows, f)), 1, key))  # same key and shape: same mask
    np.testing.assert_allclose(update, alpha / rank * (np.where(kept, np.asarray(x) / (1 - p), 0) @ a @ b), rtol=1e-4, atol=1e-5)
    no_dropout = Projection(e, f, LoRAConfig(rank=rank, alpha=alpha, dropout=0.0), nnx.Rngs(0))
    no_dropout.up_proj_lora.a[...], no_dropout.up_proj_lora.b[...] = a, b
    y = jax.random.normal(jax.random.key(4), (rows, f))
    np.testing.assert_array_equal(np.asarray(adapted(no_dropout, "up_proj", x, y, 1, key)),
                                  np.asarray(adapted(no_dropout, "up_proj", x, y, 1)))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_adapter_dropout_in_the_model_only_with_a_key(scan_layers):
    """A model with dropout p > 0: without a key (sampler, reference, evaluation) its logits are
    bit-identical to the same model's with p = 0; with a key they change, the same key gives the
    same logits and another key others; with p = 0 a key changes nothing."""
    base = dataclasses.replace(BASE, scan_layers=scan_layers, remat="full" if scan_layers else "none")
    config = dataclasses.replace(base, lora=LoRAConfig(rank=4, alpha=8.0, dropout=0.2))
    plain = dataclasses.replace(base, lora=LoRAConfig(rank=4, alpha=8.0))
    adapters, frozen = split_adapters(nnx.state(Transformer(config, rngs=nnx.Rngs(0))))
    params = join_adapters(frozen, perturbed(adapters))

    def forward(config):  # one compilation with a key, one without
        graphdef = nnx.graphdef(nnx.eval_shape(lambda: Transformer(config, rngs=nnx.Rngs(0))))
        run = jax.jit(lambda p, key: nnx.merge(graphdef, p)(TOKENS, POSITIONS, MASK, dropout_key=key)[0])
        return lambda params, key=None: np.asarray(run(params, key))

    with_dropout, without = forward(config), forward(plain)
    today = without(params)
    np.testing.assert_array_equal(with_dropout(params), today)
    first = with_dropout(params, jax.random.key(1))
    assert not np.allclose(first, today, atol=1e-4)
    np.testing.assert_array_equal(with_dropout(params, jax.random.key(1)), first)
    assert not np.allclose(with_dropout(params, jax.random.key(2)), first, atol=1e-4)
    np.testing.assert_array_equal(without(params, jax.random.key(1)), today)  # p = 0
    # with fresh adapters (B = 0) the update is 0 whatever the mask: the base path has no dropout
    fresh = join_adapters(frozen, adapters)
    np.testing.assert_array_equal(with_dropout(fresh, jax.random.key(1)), without(fresh))


def test_lora_config_keys():
    config = build_config(CONFIGS / "default.py", ["--config.model.lora.rank=8", "--config.model.lora.targets=q_proj, v_proj"])
    assert lora_config_from(config) == LoRAConfig(rank=8, alpha=16.0, targets=("q_proj", "v_proj"))
    assert lora_config_from(build_config(CONFIGS / "default.py", [])) is None  # rank 0: off, the default
    assert lora_config_from(build_config(CONFIGS / "default.py", ["--config.model.lora.rank=2"])).targets == LoRAConfig().targets
    assert lora_config_from(build_config(CONFIGS / "default.py", ["--config.model.lora.rank=2",
                                                                  "--config.model.lora.dropout=0.1"])).dropout == 0.1
    bad = {
        "--config.model.lora.targets=q_proj,qkv": "unknown LoRA target 'qkv'",
        "--config.model.lora.targets=,": "no LoRA target given",
        "--config.model.lora.rank=-1": "config.model.lora.rank: must be >= 0",
        "--config.model.lora.alpha=0": "config.model.lora.alpha: must be > 0",
        "--config.model.lora.dropout=-0.1": "config.model.lora.dropout: must be in [0, 1)",
        "--config.model.lora.dropout=1.0": "config.model.lora.dropout: must be in [0, 1)",
        "--config.model.lora.ranks=4": "unknown config key 'config.model.lora.ranks'",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            build_config(CONFIGS / "default.py", ["--config.model.lora.rank=4", override])


def test_model_config_round_trip_keeps_lora():
    config = dataclasses.replace(BASE, lora=LoRAConfig(rank=2, alpha=4.0, targets=("k_proj", "gate_proj")))
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert ModelConfig.from_dict(BASE.to_dict()) == BASE
