"""Helpers shared by the sharding tests: meshes by shape and a tiny model whose dims divide 8."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np

from jaxrl_self.models.config import ModelConfig
from jaxrl_self.parallel import make_mesh

# the mesh shapes (data, fsdp, tensor) every sharded function must agree on: pure data parallel, all
# three axes at once, FSDP with tensor parallel (8-way FSDP alone: test_fsdp_and_reshard.py)
MESH_SHAPES = [(8, 1, 1), (2, 2, 2), (1, 4, 2)]


def mesh_of(shape, devices=None):
    data, fsdp, tensor = shape
    return make_mesh(ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)), devices=devices)


def single_device_mesh():
    return mesh_of((1, 1, 1), devices=jax.devices()[:1])


def tiny_model_config(**overrides) -> ModelConfig:
    """Every sharded dimension (vocab, embed, heads, kv heads, mlp) divisible by 8."""
    fields = dict(vocab_size=64, hidden_size=32, num_layers=1, num_heads=8, num_kv_heads=8, head_dim=8,
                  intermediate_size=64, max_position_embeddings=64)
    return ModelConfig(**{**fields, **overrides})


def max_abs_diff(a, b) -> float:
    """Largest absolute difference between two pytrees of arrays (gathered to the host)."""
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))), a, b)
    return max(jax.tree.leaves(diffs))
