"""hf -> orbax -> hf through the CLI helpers; the result loads in transformers with the same logits."""
import argparse
import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from jaxrl_self.models.checkpoint_io import load_hf_checkpoint
from jaxrl_self.models.convert import add_convert_arguments, load_orbax_model, run_convert
from jaxrl_self.models.hf_config import CheckpointError


def _parse(*argv):
    return add_convert_arguments(argparse.ArgumentParser()).parse_args(list(argv))


@pytest.fixture(scope="module")
def hf_dir(make_hf_model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("hf")
    model = make_hf_model("qwen2", tie_word_embeddings=True, eos_token_id=5, bos_token_id=None)
    model.save_pretrained(directory)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.train_from_iterator(["a tiny corpus"] * 5, trainers.BpeTrainer(vocab_size=270, special_tokens=["<eos>"]))
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>").save_pretrained(directory)
    return str(directory), model


def test_hf_orbax_hf_round_trip(hf_dir, tmp_path):
    source, hf_model = hf_dir
    orbax_dir, out_dir = str(tmp_path / "orbax"), str(tmp_path / "hf")
    assert "(orbax)" in run_convert(_parse("--from", "hf", "--to", "orbax", source, orbax_dir))
    assert os.path.isfile(os.path.join(orbax_dir, "tokenizer", "tokenizer.json"))

    config, _, params = load_orbax_model(orbax_dir)
    expected_config, _, expected = load_hf_checkpoint(source)
    assert config == expected_config
    jax.tree.map(np.testing.assert_array_equal, params, expected)

    run_convert(_parse("--from", "orbax", "--to", "hf", "--max-shard-bytes", "50000", orbax_dir, out_dir))
    assert os.path.isfile(os.path.join(out_dir, "model.safetensors.index.json"))
    assert os.path.isfile(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "config.json")) as f:
        assert json.load(f)["eos_token_id"] == 5
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    tokens = torch.randint(0, config.vocab_size, (2, 6))
    with torch.no_grad():
        np.testing.assert_allclose(reloaded(tokens).logits.numpy(), hf_model(tokens).logits.numpy(), atol=1e-6, rtol=0)
    assert transformers.AutoTokenizer.from_pretrained(out_dir).eos_token == "<eos>"


def test_bfloat16_export(hf_dir, tmp_path):
    source, _ = hf_dir
    orbax_dir = str(tmp_path / "orbax")
    run_convert(_parse("--from", "hf", "--to", "orbax", source, orbax_dir))
    run_convert(_parse("--from", "orbax", "--to", "hf", "--dtype", "bfloat16", orbax_dir, str(tmp_path / "bf16")))
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"))
    assert reloaded.config.dtype == torch.bfloat16 or reloaded.dtype == torch.bfloat16
    config, _, params = load_hf_checkpoint(str(tmp_path / "bf16"))
    assert params["norm"][...].dtype == np.float32


def test_errors(hf_dir, tmp_path):
    source, _ = hf_dir
    with pytest.raises(ValueError, match="choose two different formats"):
        run_convert(_parse("--from", "hf", "--to", "hf", source, str(tmp_path / "x")))
    with pytest.raises(CheckpointError, match="exists and is not empty"):
        run_convert(_parse("--from", "hf", "--to", "orbax", source, source))
    with pytest.raises(CheckpointError, match="no model_config.json in orbax model directory"):
        run_convert(_parse("--from", "orbax", "--to", "hf", str(tmp_path), str(tmp_path / "out")))
