"""LoRA export against `transformers` and `peft` on tiny random checkpoints built here: a LoRA model
(trained-looking adapters on every projection) exported merged loads in transformers with the same
logits within 1e-3, and its adapters in the PEFT layout load in peft on the base with the same
logits within 1e-4."""
import dataclasses
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from jaxrl_self.models.checkpoint_io import export_hf_checkpoint, export_peft_adapter, load_hf_checkpoint
from jaxrl_self.models.lora import LoRAConfig, join_adapters
from jaxrl_self.models.transformer import init_adapters, model_graphdef, positions_from_mask

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
CASES = {
    "llama-gqa-untied": ("llama", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)),
    "qwen2-bias-tied": ("qwen2", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)),
}


def tiny_checkpoint(directory, architecture, extra):
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[architecture]
    model_class = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}[architecture]
    torch.manual_seed(0)
    hf_config = config_class(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                             max_position_embeddings=64, **extra)
    model = model_class(hf_config).eval()
    model.save_pretrained(directory)
    return model


def hf_logits(model, tokens, mask):
    positions = np.asarray(positions_from_mask(jnp.asarray(mask)))
    with torch.no_grad():
        return model(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
                     position_ids=torch.tensor(positions, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_merged_export_and_peft_adapter_match_the_lora_model(tmp_path, case):
    architecture, extra = CASES[case]
    base_dir, merged_dir, adapter_dir = (str(tmp_path / name) for name in ("base", "merged", "adapter"))
    base_hf = tiny_checkpoint(base_dir, architecture, extra)
    config, _, base_params = load_hf_checkpoint(base_dir)
    config = dataclasses.replace(config, lora=LoRAConfig(rank=4, alpha=8.0))
    adapters = init_adapters(config, seed=0)
    leaves, tree = jax.tree.flatten(adapters)  # as after training: B no longer zero
    keys = jax.random.split(jax.random.key(1), len(leaves))
    adapters = jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    params = join_adapters(base_params, adapters)

    rng = np.random.RandomState(0)
    tokens = rng.randint(0, 64, (2, 7)).astype(np.int32)
    mask = np.ones((2, 7), bool)
    mask[1, :3] = False  # left padding
    graphdef = model_graphdef(config)
    ours = np.asarray(jax.jit(lambda p: nnx.merge(graphdef, p)(tokens, positions_from_mask(mask), mask)[0])(params))
    assert np.abs(ours - hf_logits(base_hf, tokens, mask))[mask].max() > 1e-2  # the adapters change the logits

    export_hf_checkpoint(config, params, merged_dir)
    merged = transformers.AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert np.abs(hf_logits(merged, tokens, mask) - ours)[mask].max() < 1e-3

    if importlib.util.find_spec("peft") is None:
        pytest.skip("peft is not installed (pip install peft, or the `test` extra): the PEFT-layout adapter is not checked")
    import peft

    assert export_peft_adapter(config, params, adapter_dir, base_model=base_dir) == ["adapter_config.json",
                                                                                    "adapter_model.safetensors"]
    fresh_base = transformers.AutoModelForCausalLM.from_pretrained(base_dir).eval()
    adapted = peft.PeftModel.from_pretrained(fresh_base, adapter_dir).eval()
    assert np.abs(hf_logits(adapted, tokens, mask) - ours)[mask].max() < 1e-4
