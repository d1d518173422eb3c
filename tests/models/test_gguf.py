"""GGUF import on a tiny file written here: a random Llama (tiny HF model) quantized to Q8_0 / Q4_0 /
Q4_1 / F16 / F32 with llama.cpp's Q/K row permutation, plus a small byte-level BPE tokenizer with
control and user-defined tokens and a chat template. Reference: transformers loading the same file.
(The real SmolLM2 file is covered by tests/test_real_model.py.)
"""
import argparse

import numpy as np
import pytest

import torch  # test extra: pip install -e ".[test]"; missing means a failure, not a skip
import transformers  # test extra: pip install -e ".[test]"; missing means a failure, not a skip

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jaxrl_self.models.checkpoint_io import load_hf_checkpoint  # noqa: E402
from jaxrl_self.models.convert import add_convert_arguments, run_convert  # noqa: E402
from jaxrl_self.models.gguf import hf_name, unpermute_rotary_rows  # noqa: E402
from jaxrl_self.models.hf_config import CheckpointError  # noqa: E402
from jaxrl_self.models.pretrained import load_gguf, load_pretrained  # noqa: E402
from jaxrl_self.models.transformer import positions_from_mask  # noqa: E402
from tiny_models import FILE, QUANT, TEXTS, USER_DEFINED, T, llama_cpp_permute, tokenizer_tokens, write_tiny_gguf  # noqa: E402

@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_hf_model):
    """(directory holding tiny.gguf, the HF model it was written from)."""
    directory = tmp_path_factory.mktemp("gguf")
    model = make_hf_model("llama", vocab_size=len(tokenizer_tokens()[0]), tie_word_embeddings=False)
    write_tiny_gguf(str(directory / FILE), model)
    return directory, model


def test_unpermute_inverts_llama_cpp_permute():
    weight = np.random.default_rng(0).normal(size=(3 * 8, 5)).astype(np.float32)
    np.testing.assert_array_equal(unpermute_rotary_rows(llama_cpp_permute(weight, 3), 3), weight)
    assert not np.array_equal(llama_cpp_permute(weight, 3), weight)


def test_names_map_to_hf():
    assert hf_name("blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight"
    assert hf_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("blk.0.attn_rot_embd") is None


def test_logits_match_transformers_on_the_same_file(tiny):
    directory, _ = tiny
    config, graphdef, params, _, _ = load_gguf(str(directory / FILE))
    assert not config.tie_word_embeddings and config.num_kv_heads == 2
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=FILE, dtype=torch.float32).eval()
    ids = np.random.default_rng(1).integers(0, config.vocab_size, size=(2, 17)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    logits, _ = nnx.merge(graphdef, params)(jnp.asarray(ids), positions_from_mask(jnp.asarray(mask)), jnp.asarray(mask))
    with torch.no_grad():
        expected = reference(torch.from_numpy(ids).long()).logits.numpy()
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=1e-4)


def test_dequantized_weights_are_close_to_the_source(tiny):
    """Sanity check of the quantization round trip: Q4 blocks are coarse, but the layout must be right."""
    directory, model = tiny
    _, _, params, _, _ = load_gguf(str(directory / FILE))
    ours = np.asarray(params["layers"][0]["self_attn"]["q_proj"][...])  # [E, H, D]
    source = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()  # [H*D, E]
    ours_hf = ours.reshape(ours.shape[0], -1).T
    assert np.corrcoef(ours_hf.ravel(), source.ravel())[0, 1] > 0.95


def test_tokenizer_matches_transformers(tiny):
    directory, _ = tiny
    tokenizer = load_gguf(str(directory / FILE))[3]
    reference = transformers.AutoTokenizer.from_pretrained(str(directory), gguf_file=FILE)
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (1, 2, 2)
    assert tokenizer.vocab_size == len(reference)
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == reference.encode(text, add_special_tokens=False), text
        assert tokenizer.decode(ids, skip_special_tokens=False) == reference.decode(ids) == text
    assert tokenizer.encode(USER_DEFINED) == [len(tokenizer_tokens()[0]) - 1]
    chat = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "<answer>12</answer>"}]
    text = tokenizer.apply_chat_template(chat)
    assert text == reference.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert tokenizer.encode(text) == list(reference.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])


def test_unsupported_quantization_type_is_named(tiny, tmp_path):
    _, model = tiny
    write_tiny_gguf(str(tmp_path / FILE), model, {**QUANT, "ffn_up": T.Q5_0})
    with pytest.raises(CheckpointError, match=r"blk\.0\.ffn_up\.weight.*Q5_0.*supported: F32, F16, Q8_0, Q4_0, Q4_1"):
        load_gguf(str(tmp_path / FILE))


def test_missing_or_foreign_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="GGUF file not found"):
        load_gguf(str(tmp_path / "absent.gguf"))
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        load_gguf(str(tmp_path / "junk.gguf"))
    with pytest.raises(CheckpointError, match="neither a .gguf file"):
        load_pretrained(str(tmp_path))


def _convert(*argv) -> str:
    return run_convert(add_convert_arguments(argparse.ArgumentParser()).parse_args(list(argv)))


def test_convert_to_hf_and_orbax_and_load_pretrained(tiny, tmp_path):
    directory, _ = tiny
    src = str(directory / FILE)
    config, _, params, tokenizer = load_pretrained(src)
    assert "(gguf) ->" in _convert("--from", "gguf", "--to", "hf", src, str(tmp_path / "hf"))
    assert "(gguf) ->" in _convert("--from", "gguf", "--to", "orbax", src, str(tmp_path / "orbax"))
    expected = dict(nnx.to_flat_state(params))
    for path in (tmp_path / "hf", tmp_path / "orbax"):
        loaded_config, _, loaded, loaded_tokenizer = load_pretrained(str(path), dtype="bfloat16")
        assert loaded_config.dtype == "bfloat16" and loaded_config.hidden_size == config.hidden_size
        for key, value in nnx.to_flat_state(loaded):
            np.testing.assert_array_equal(np.asarray(value[...]), np.asarray(expected[key][...]), err_msg=f"{path}: {key}")
        for text in TEXTS:
            assert loaded_tokenizer.encode(text) == tokenizer.encode(text)
        assert loaded_tokenizer.apply_chat_template([{"role": "user", "content": "hi"}]) == \
            tokenizer.apply_chat_template([{"role": "user", "content": "hi"}])
    # the HF export is a regular checkpoint: transformers loads it and agrees with the GGUF logits
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), dtype=torch.float32).eval()
    reference = transformers.AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=FILE, dtype=torch.float32).eval()
    ids = torch.arange(20).reshape(2, 10)
    with torch.no_grad():
        np.testing.assert_allclose(hf(ids).logits.numpy(), reference(ids).logits.numpy(), atol=1e-5)
    assert hf.config.eos_token_id == 2 and hf.config.bos_token_id == 1
    assert load_hf_checkpoint(str(tmp_path / "hf"))[0].vocab_size == config.vocab_size
