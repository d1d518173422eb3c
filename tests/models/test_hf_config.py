"""config.json <-> ModelConfig, and the clear errors for bad checkpoints."""
import json
import os
import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxrl_self.models.checkpoint_io import INDEX_FILE, load_hf_checkpoint
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.hf_config import CheckpointError, hf_config_from_model_config, model_config_from_hf

LLAMA31 = {  # the fields of Llama-3.1-8B's config.json that matter here (older spelling)
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_act": "silu",
    "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "attention_bias": False, "mlp_bias": False, "torch_dtype": "bfloat16",
}


def test_llama31_both_rope_spellings_agree():
    legacy = model_config_from_hf(LLAMA31)
    new = dict(LLAMA31)
    new["rope_parameters"] = {"rope_theta": new.pop("rope_theta"), **new.pop("rope_scaling")}
    assert model_config_from_hf(new) == legacy
    assert legacy.head_dim == 128 and legacy.num_kv_heads == 8 and legacy.rope_theta == 500000.0
    assert legacy.rope_scaling_dict() == {**LLAMA31["rope_scaling"]}


def test_llama2_default_rope_and_missing_kv_heads():
    hf = {k: v for k, v in LLAMA31.items() if k not in ("rope_scaling", "num_key_value_heads")}
    hf["rope_theta"] = 10000.0
    config = model_config_from_hf(hf)
    assert config.rope_scaling is None and config.num_kv_heads == config.num_heads


def test_qwen_flags_and_mistral_window():
    qwen2 = model_config_from_hf({**LLAMA31, "model_type": "qwen2", "rope_scaling": None, "tie_word_embeddings": True,
                                  "sliding_window": 4096, "use_sliding_window": False})
    assert qwen2.attention_bias and not qwen2.qk_norm and qwen2.tie_word_embeddings and qwen2.sliding_window is None
    qwen3 = model_config_from_hf({**LLAMA31, "model_type": "qwen3", "rope_scaling": None, "head_dim": 96})
    assert qwen3.qk_norm and qwen3.head_dim == 96
    mistral = model_config_from_hf({**LLAMA31, "model_type": "mistral", "rope_scaling": None, "sliding_window": 4096})
    assert mistral.sliding_window == 4096


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gemma2"}, "model_type 'gemma2' is not supported (supported: llama, mistral, qwen2, qwen3)"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"attention_bias": True}, "attention_bias=True is not supported"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported"),
    ({"model_type": "qwen2", "use_sliding_window": True}, "use_sliding_window=True is not supported"),
])
def test_unsupported_configs_are_named(change, message):
    with pytest.raises(CheckpointError, match=re.escape(message)):
        model_config_from_hf({**LLAMA31, **change}, source="ckpt/config.json")


@pytest.mark.parametrize("architecture, flags", [("llama", {}), ("mistral", {"sliding_window": 8}),
                                                 ("qwen2", {"attention_bias": True}), ("qwen3", {"qk_norm": True})])
def test_written_config_reads_back(architecture, flags):
    config = ModelConfig(vocab_size=100, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=12, architecture=architecture,
                         rope_scaling=tuple(sorted({"rope_type": "linear", "factor": 2.0}.items())), tie_word_embeddings=False,
                         **flags)
    assert model_config_from_hf(json.loads(json.dumps(hf_config_from_model_config(config)))) == config


def test_model_config_dict_round_trip():
    config = model_config_from_hf(LLAMA31)
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown ModelConfig keys \\['bogus'\\]"):
        ModelConfig.from_dict({**config.to_dict(), "bogus": 1})


# --- bad checkpoints -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_checkpoint(make_hf_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("good")
    make_hf_model("llama", vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1).save_pretrained(directory)
    return directory


def _copy(src, dst):
    os.makedirs(dst)
    for name in os.listdir(src):
        with open(os.path.join(src, name), "rb") as f, open(os.path.join(dst, name), "wb") as g:
            g.write(f.read())
    return dst


def _edit_tensors(directory, edit):
    path = os.path.join(directory, "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_good_checkpoint_loads(good_checkpoint):
    config, _, params = load_hf_checkpoint(str(good_checkpoint))
    assert config.num_layers == 1 and params["layers"][0]["self_attn"]["q_proj"].shape == (32, 4, 8)


def test_missing_config_json(good_checkpoint, tmp_path):
    directory = _copy(good_checkpoint, tmp_path / "c")
    os.remove(directory / "config.json")
    with pytest.raises(CheckpointError, match="no config.json in checkpoint directory"):
        load_hf_checkpoint(str(directory))


def test_missing_weights_file(good_checkpoint, tmp_path):
    directory = _copy(good_checkpoint, tmp_path / "c")
    os.remove(directory / "model.safetensors")
    with pytest.raises(CheckpointError, match="expected model.safetensors or model.safetensors.index.json"):
        load_hf_checkpoint(str(directory))


def test_index_names_missing_shard(good_checkpoint, tmp_path):
    directory = _copy(good_checkpoint, tmp_path / "c")
    names = load_file(directory / "model.safetensors").keys()
    with open(directory / INDEX_FILE, "w") as f:
        json.dump({"weight_map": {n: "model-00001-of-00002.safetensors" for n in names}}, f)
    with pytest.raises(CheckpointError, match="lists weight file 'model-00001-of-00002.safetensors', which is missing"):
        load_hf_checkpoint(str(directory))


def test_unsupported_architecture(good_checkpoint, tmp_path):
    directory = _copy(good_checkpoint, tmp_path / "c")
    with open(directory / "config.json") as f:
        hf = json.load(f)
    with open(directory / "config.json", "w") as f:
        json.dump({**hf, "model_type": "gpt2"}, f)
    with pytest.raises(CheckpointError, match="model_type 'gpt2' is not supported"):
        load_hf_checkpoint(str(directory))


def test_wrong_shape_tensor(good_checkpoint, tmp_path):
    directory = _copy(good_checkpoint, tmp_path / "c")
    _edit_tensors(directory, lambda t: t.update({"model.layers.0.mlp.up_proj.weight": np.zeros((40, 32), np.float32)}))
    with pytest.raises(CheckpointError, match=re.escape(
            "tensor 'model.layers.0.mlp.up_proj.weight' in model.safetensors has shape (40, 32), expected (48, 32)")):
        load_hf_checkpoint(str(directory))


def test_unexpected_tensor_name(good_checkpoint, tmp_path):
    directory = _copy(good_checkpoint, tmp_path / "c")
    _edit_tensors(directory, lambda t: t.update({"model.layers.0.self_attn.o_proj.bias": np.zeros((32,), np.float32)}))
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.self_attn.o_proj.bias' in model.safetensors"):
        load_hf_checkpoint(str(directory))


def test_missing_tensor(good_checkpoint, tmp_path):
    directory = _copy(good_checkpoint, tmp_path / "c")
    _edit_tensors(directory, lambda t: t.pop("model.norm.weight"))
    with pytest.raises(CheckpointError, match="tensor 'model.norm.weight' is missing"):
        load_hf_checkpoint(str(directory))


def test_uncastable_dtype(good_checkpoint, tmp_path):
    directory = _copy(good_checkpoint, tmp_path / "c")
    _edit_tensors(directory, lambda t: t.update({"model.norm.weight": np.ones((32,), np.int32)}))
    with pytest.raises(CheckpointError, match="'model.norm.weight' in model.safetensors has dtype int32, which cannot be cast"):
        load_hf_checkpoint(str(directory))


def test_bfloat16_checkpoint_loads_as_float32(good_checkpoint, tmp_path):
    import ml_dtypes
    directory = _copy(good_checkpoint, tmp_path / "c")
    original = load_file(directory / "model.safetensors")
    _edit_tensors(directory, lambda t: t.update({k: v.astype(ml_dtypes.bfloat16) for k, v in t.items()}))
    _, _, params = load_hf_checkpoint(str(directory))
    norm = params["norm"][...]
    assert norm.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(norm), original["model.norm.weight"].astype(ml_dtypes.bfloat16).astype(np.float32))


def test_sharded_placement_one_tensor_at_a_time(good_checkpoint):
    """`sharding_for(logical_axes, shape)` decides each parameter's placement (here a 2-device tensor axis)."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:2]), ("tensor",))
    calls = []

    def sharding_for(axes, shape):
        calls.append((axes, shape))
        spec = [("tensor" if axis in ("vocab", "heads", "mlp") else None) for axis in axes]
        return NamedSharding(mesh, PartitionSpec(*spec))

    config, _, params = load_hf_checkpoint(str(good_checkpoint), sharding_for=sharding_for)
    _, _, plain = load_hf_checkpoint(str(good_checkpoint))
    assert (("embed", "heads", "head_dim"), (32, 4, 8)) in calls
    q_proj = params["layers"][0]["self_attn"]["q_proj"][...]
    assert q_proj.sharding.spec == PartitionSpec(None, "tensor", None) and len(q_proj.sharding.device_set) == 2
    jax.tree.map(np.testing.assert_array_equal, params, plain)
