"""Tiny random Hugging Face checkpoints built in-process (transformers + CPU torch; nothing downloaded)."""
import pytest

from tiny_models import build_hf_model

@pytest.fixture(scope="session")
def make_hf_model():
    """`make_hf_model(model_type, seed=0, **config_overrides)` -> a tiny random HF model (see build_hf_model)."""
    return build_hf_model
