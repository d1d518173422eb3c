"""Greedy parity with `transformers` `generate(do_sample=False)` on tiny random Qwen2 and Llama
checkpoints (built in-process, nothing downloaded), ragged left-padded prompts, per-row EOS."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import torch  # test extra: pip install -e ".[test]"; missing means a failure, not a skip
import transformers  # test extra: pip install -e ".[test]"; missing means a failure, not a skip

from jaxrl_self.models.checkpoint_io import load_hf_checkpoint  # noqa: E402
from jaxrl_self.sampling.buckets import pad_prompts  # noqa: E402
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
PAD, STEPS = 0, 16
PROMPTS = [[5, 17, 99, 3, 42, 8, 120, 64, 7], [150, 2, 33], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23], [77]]
MODELS = {
    "qwen2-tied": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(tie_word_embeddings=True)),
    "llama-untied": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(tie_word_embeddings=False)),
}


def random_checkpoint(name, directory):
    """A tiny random HF model with every parameter noised (so biases and norms matter), saved to `directory`."""
    config_cls, model_cls, overrides = MODELS[name]
    config = config_cls(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, pad_token_id=PAD,
                        attn_implementation="eager", **overrides)
    torch.manual_seed(0)
    model = model_cls(config).eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            noise = torch.randn_like(param) * 0.2
            param.copy_(noise + 1.0 if "norm" in param_name else noise)
    model.save_pretrained(directory)
    return model


def hf_greedy(model, tokens, mask, eos_id):
    """`[B, L]` generated ids (L <= STEPS; pad after a row's EOS), left padding via attention_mask."""
    with torch.no_grad():
        out = model.generate(input_ids=torch.from_numpy(tokens).long(), attention_mask=torch.from_numpy(mask).long(),
                             max_new_tokens=STEPS, do_sample=False, pad_token_id=PAD, eos_token_id=eos_id)
    return out[:, tokens.shape[1]:].numpy()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_greedy_matches_transformers_generate(name, tmp_path):
    hf_model = random_checkpoint(name, tmp_path)
    tokens, mask = pad_prompts(PROMPTS, PAD)
    # EOS: a token that row 0 emits at step 5 when nothing stops it, so rows stop at different steps
    eos_id = int(hf_greedy(hf_model, tokens, mask, eos_id=None)[0, 5])
    expected = hf_greedy(hf_model, tokens, mask, eos_id=eos_id)

    _, graphdef, state = load_hf_checkpoint(str(tmp_path))
    run = make_sampler(graphdef, SamplingConfig(max_new_tokens=STEPS, eos_id=eos_id, pad_id=PAD, temperature=0.0))
    samples = run(state, jnp.asarray(tokens), jnp.asarray(mask), jax.random.key(0))

    generated = expected.shape[1]
    for row in range(len(PROMPTS)):
        hits = np.flatnonzero(expected[row] == eos_id)
        length = hits[0] + 1 if len(hits) else generated
        np.testing.assert_array_equal(np.asarray(samples.tokens[row, :length]), expected[row, :length], err_msg=f"row {row}")
        assert int(samples.lengths[row]) == length and bool(samples.truncated[row]) == (not len(hits))
    assert 0 < int(np.sum(~np.asarray(samples.truncated))) < len(PROMPTS)  # some rows hit EOS, some did not
