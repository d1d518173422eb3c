"""A LoRA model's frozen base kept quantized (`models.quantized`, docs/lora.md#quantized-base): the
blocks and their dequantization equal the `gguf` package's, a model with a quantized base computes
the logits of the same model with the dequantized weights, a GGUF file's blocks are kept exactly,
and bad `model.lora.base_quantization` settings are ConfigErrors."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import gguf
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from tiny_models import T, build_hf_model, write_tiny_gguf

from jaxrl_self.config import ConfigError, build_config
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.lora import LoRAConfig, join_adapters, split_adapters
from jaxrl_self.models.pretrained import load_pretrained
from jaxrl_self.models.quantized import QuantizedBlocks, dequantize, quantize
from jaxrl_self.models.transformer import (Transformer, cast_matrices, dequantized_base, init_adapters, model_graphdef,
                                           quantized_base)
from jaxrl_self.parallel import make_mesh, shard_state
from jaxrl_self.parallel.rules import activation_mesh
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GGUF_TYPES = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1}
BASE = ModelConfig(vocab_size=40, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                   intermediate_size=96)
TOKENS = jnp.array([[3, 7, 1, 9, 2, 5], [4, 4, 8, 0, 6, 1]])
POSITIONS = jnp.broadcast_to(jnp.arange(6), (2, 6))
MASK = jnp.ones((2, 6), bool)


def gguf_fields(raw: np.ndarray, fmt: str) -> dict:
    """A gguf-quantized `[rows, blocks * bytes]` uint8 array split into its fields, each `[rows, blocks, ...]`."""
    blocks = raw.reshape(raw.shape[0], -1, {"q8_0": 34, "q4_0": 18, "q4_1": 20}[fmt])  # bytes a block
    scale_bytes = 4 if fmt == "q4_1" else 2
    fields = {"scales": blocks[..., :2].copy().view(np.float16)[..., 0], "values": blocks[..., scale_bytes:]}
    if fmt == "q4_1":
        fields["mins"] = blocks[..., 2:4].copy().view(np.float16)[..., 0]
    if fmt == "q8_0":
        fields["values"] = fields["values"].view(np.int8)
    return fields


def ours_as_rows(values, scales, mins=None) -> dict:
    """Our blocks of a `[rows, K]` weight quantized along -1, in `gguf_fields`' layout."""
    fields = {"scales": np.asarray(scales), "values": np.asarray(values).reshape(scales.shape + (-1,))}
    if mins is not None:
        fields["mins"] = np.asarray(mins)
    return fields


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "q4_1"])
def test_blocks_and_dequantization_equal_the_gguf_package(fmt):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(6, 128)) * rng.uniform(0.01, 3.0, size=(6, 1)) + rng.normal(size=(6, 1))).astype(np.float32)
    x[2, 32:64] = 0.0  # an all-zero block: scale 0
    reference = gguf.quants.quantize(x, GGUF_TYPES[fmt])
    reference_values = gguf.quants.dequantize(reference, GGUF_TYPES[fmt]).reshape(x.shape)
    expected = gguf_fields(reference, fmt)
    for source in (x, reference_values):  # fresh data, and a GGUF tensor's values quantized again
        blocks = quantize(jnp.asarray(source), fmt, -1)
        ours = ours_as_rows(blocks.values, blocks.scales, blocks.mins)
        assert ours.keys() == expected.keys()
        for name in ours:
            np.testing.assert_array_equal(ours[name], expected[name], err_msg=name)
        np.testing.assert_array_equal(np.asarray(dequantize(blocks, jnp.float32)), reference_values)
    assert not np.any(np.asarray(dequantize(quantize(jnp.asarray(x), fmt, -1)))[2, 32:64])
    # blocks along another axis (a weight `[in, out]`): the same numbers, the axes kept in place
    transposed = quantize(jnp.asarray(x.T), fmt, -2)
    assert transposed.scales.shape == (4, 6) and transposed.values.shape == ((128 if fmt == "q8_0" else 64), 6)
    np.testing.assert_array_equal(np.asarray(dequantize(transposed)).T, reference_values)


def logits(config, params):
    return np.asarray(jax.jit(lambda p: nnx.merge(model_graphdef(config), p)(TOKENS, POSITIONS, MASK)[0])(params))


@pytest.mark.parametrize("fmt, scan_layers", [("q4_0", False), ("q4_1", True)])  # q8_0: test_gguf_blocks_are_kept_as_stored
def test_quantized_base_computes_the_dequantized_models_logits(fmt, scan_layers):
    config = dataclasses.replace(BASE, scan_layers=scan_layers, lora=LoRAConfig(rank=4, alpha=8.0, base_quantization=fmt))
    params = nnx.state(Transformer(config, rngs=nnx.Rngs(0)))
    adapters, frozen = split_adapters(params)
    blocks = [v for v in jax.tree.leaves(frozen, is_leaf=lambda x: isinstance(x, nnx.Variable)) if isinstance(v, QuantizedBlocks)]
    assert len(blocks) == 7 * (3 if fmt == "q4_1" else 2) * (1 if scan_layers else BASE.num_layers)
    quantized_bytes = sum(v[...].nbytes for v in blocks)
    assert quantized_bytes / BASE.layer_matmul_params == {"q4_0": 18 / 32, "q4_1": 20 / 32}[fmt]
    # the same axes as the weights they hold, e.g. q_proj [E/2, H, D] uint8 for 4-bit values
    flat = dict(nnx.to_flat_state(frozen))
    layer = ("layers",) if scan_layers else ("layers", 0)
    q_values = flat[layer + ("self_attn", "q_proj", "values")]
    assert q_values.get_metadata()["logical_axes"][-3:] == ("embed", "heads", "head_dim")
    assert q_values.shape[-3:] == (32, 2, 32) and q_values.dtype == jnp.uint8

    dense, dense_config = dequantized_base(params, config)
    assert dense_config.lora.base_quantization == "" and not any(
        isinstance(v, QuantizedBlocks) for v in jax.tree.leaves(dense, is_leaf=lambda x: isinstance(x, nnx.Variable)))
    quantized_logits = logits(config, params)
    np.testing.assert_array_equal(quantized_logits, logits(dense_config, dense))
    # fresh adapters (B = 0): the logits of the dequantized base model itself
    plain = dataclasses.replace(config, lora=None)
    np.testing.assert_array_equal(quantized_logits, logits(plain, split_adapters(dense)[1]))
    # the base's blocks keep their storage dtypes in a bfloat16 train state (`model.param_dtype`), the embedding is cast
    kept = dict(nnx.to_flat_state(cast_matrices(frozen, "bfloat16")))
    assert kept[("embed_tokens",)].dtype == jnp.bfloat16
    for path, variable in flat.items():
        if isinstance(variable, QuantizedBlocks):
            assert kept[path].dtype == variable.dtype in (jnp.uint8, jnp.float16)
            np.testing.assert_array_equal(kept[path][...], variable[...])
    # a trained adapter changes the logits
    moved = jax.tree.map(lambda b: b + 0.1, adapters)
    assert not np.allclose(logits(config, join_adapters(frozen, moved)), quantized_logits, atol=1e-3)


def test_quantized_base_on_a_mesh():
    """fsdp x tensor (2 x 2 of the 8 CPU devices): the blocks shard as their weights do, the forward
    pass gives the single-device logits, and the sampler (its own layout) their greedy token."""
    config = dataclasses.replace(BASE, lora=LoRAConfig(rank=4, base_quantization="q4_1"))
    graphdef, params = nnx.split(Transformer(config, rngs=nnx.Rngs(0)))
    mesh = make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=2, tensor=2)), devices=jax.devices()[:4])
    sharded = shard_state(params, mesh)
    flat = dict(nnx.to_flat_state(sharded))
    for part in ("values", "scales", "mins"):  # [E/2 or E/32, H, D]: embed over fsdp, heads over tensor
        assert flat[("layers", 0, "self_attn", "q_proj", part)][...].sharding.spec == P("fsdp", "tensor"), part
    down = {part: flat[("layers", 0, "mlp", "down_proj", part)][...].sharding.spec for part in ("values", "scales")}
    assert down == {"values": P("tensor", "fsdp"), "scales": P(None, "fsdp")}  # [F/2, E]; F/32 = 3 blocks: not split

    def forward(p):
        with activation_mesh(mesh):
            return nnx.merge(graphdef, p)(TOKENS, POSITIONS, MASK)[0]

    single = logits(config, params)
    np.testing.assert_allclose(np.asarray(jax.jit(forward)(sharded)), single, rtol=1e-5, atol=1e-5)
    sampling = SamplingConfig(max_new_tokens=2, eos_id=1, pad_id=0, temperature=0.0)
    samples = make_sampler(graphdef, sampling, mesh)(sharded, TOKENS, MASK, jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(samples.tokens)[:, 0], single[:, -1].argmax(-1))  # greedy: the top logit


def test_gguf_blocks_are_kept_as_stored(tmp_path):
    """GGUF files whose projections are Q8_0 (Q4_0) loaded with base_quantization q8_0 (q4_0): the
    file's own blocks, and the logits of the float32 import."""
    hf_model = build_hf_model("llama", num_attention_heads=2, num_key_value_heads=1)  # head_dim 32
    for fmt in ("q8_0", "q4_0"):
        path = str(tmp_path / f"{fmt}.gguf")
        kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
        write_tiny_gguf(path, hf_model, {kind: GGUF_TYPES[fmt] for kind in kinds})
        config, _, float_params, _ = load_pretrained(path)
        lora_config = dataclasses.replace(config, lora=LoRAConfig(rank=2, base_quantization=fmt))
        adapters = init_adapters(lora_config, 0)
        params = join_adapters(quantized_base(float_params, lora_config), adapters)
        raw = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.1.ffn_up.weight").data
        flat = dict(nnx.to_flat_state(params))
        stored = [flat[("layers", 1, "mlp", "up_proj", part)][...].T for part in ("values", "scales")]  # [F, E(/2)], [F, E/32]
        ours = ours_as_rows(*stored)
        for field, value in gguf_fields(np.asarray(raw), fmt).items():
            np.testing.assert_array_equal(ours[field], value, err_msg=field)
        dense_config = dataclasses.replace(config, lora=LoRAConfig(rank=2))
        np.testing.assert_allclose(logits(lora_config, params), logits(dense_config, join_adapters(float_params, adapters)),
                                   rtol=1e-5, atol=1e-5)


def test_bad_base_quantization_settings_are_config_errors():
    lora = ["--config.model.lora.rank=4", "--config.model.hidden_size=64", "--config.model.head_dim=32",
            "--config.model.intermediate_size=96"]
    config = build_config(CONFIGS / "default.py", lora + ["--config.model.lora.base_quantization=q4_1"])
    assert config.model.lora.base_quantization == "q4_1"
    bad = {
        "--config.model.lora.base_quantization=q5_k": r"config.model.lora.base_quantization: must be '' \(off\) or one of \('q8_0', 'q4_0', 'q4_1'\), got 'q5_k'",
        "--config.model.head_dim=16": r"the input axis of o_proj \(head_dim 16\) is not a multiple of 32",
        "--config.model.intermediate_size=80": r"down_proj \(intermediate_size 80\)",
        "--config.model.lora.rank=0": "config.model.lora.base_quantization: 'q4_0' quantizes a frozen base: it needs LoRA",
    }
    for override, message in bad.items():
        quantization = [] if "base_quantization" in override else ["--config.model.lora.base_quantization=q4_0"]
        with pytest.raises(ConfigError, match=message):
            build_config(CONFIGS / "default.py", lora + quantization + [override])
