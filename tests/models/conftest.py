"""Tiny random Hugging Face checkpoints built in-process (transformers + CPU torch; nothing downloaded)."""
import pytest

_BASE = dict(vocab_size=160, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rms_norm_eps=1e-6, max_position_embeddings=128)


def build_hf_model(model_type: str, seed: int = 0, **overrides):
    """A tiny random `*ForCausalLM` (eager attention, fp32) with every parameter randomised.

    HF initialises biases to 0 and norms to 1, which would hide layout mistakes; here norms are
    1 + noise and everything else is noise.
    """
    import torch
    import transformers

    classes = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }
    config_cls, model_cls = classes[model_type]
    config = config_cls(**{**_BASE, **overrides}, attn_implementation="eager")
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn_like(param) * 0.2
            param.copy_(noise + 1.0 if "norm" in name else noise)
    return model


@pytest.fixture(scope="session")
def make_hf_model():
    """`make_hf_model(model_type, seed=0, **config_overrides)` -> a tiny random HF model (see build_hf_model)."""
    return build_hf_model
