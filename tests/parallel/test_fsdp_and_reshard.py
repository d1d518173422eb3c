"""FSDP shards parameters and optimizer state 8 ways; a checkpoint saved on one mesh restores
onto another mesh shape (or one device) with identical values."""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from sharding_helpers import mesh_of, single_device_mesh, tiny_model_config

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import load_config_file, validate
from jaxrl_self.parallel import abstract_state, bytes_per_device, shard_state
from recipe_helpers import built
from jaxrl_self.train.loop import fresh_state
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def total_bytes(tree) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


def test_fsdp_shards_params_and_optimizer_state():
    _, params = init_model(tiny_model_config(), seed=0)
    state = shard_state(init_train_state(params, make_optimizer(1e-3, 10), 0, with_reference=False), mesh_of((1, 8, 1)))
    for tree in (state.params, state.opt_state):
        per_device = bytes_per_device(tree)
        assert len(per_device) == 8
        assert max(per_device.values()) <= total_bytes(tree) / 7, (per_device, total_bytes(tree))


def run_config(shape):
    """The default job's config with a tiny model on a mesh of all 8 devices shaped `shape`."""
    config = load_config_file(CONFIGS / "default.py")
    config.task.update(dict(digits=1, max_prompt_len=8, test_size=8))
    config.model.update(dict(hidden_size=32, num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=64,
                             max_position_embeddings=32))
    config.rl.update(dict(max_new_tokens=8, prompts_per_step=8))
    config.mesh.update(dict(zip(("num_devices", "data", "fsdp", "tensor"), (0, *shape))))
    validate(config)
    return config


def test_checkpoint_saved_on_one_mesh_restores_on_others(tmp_path):
    saving, saving_ctx = built(run_config((2, 2, 2)))
    state = fresh_state(saving_ctx, saving, "rl")
    state = state.replace(opt_state=jax.tree.map(lambda x: x + 1, state.opt_state))  # moments not all zeros
    assert state.params["layers"][0]["mlp"]["up_proj"][...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    ckpt = Checkpointer(tmp_path / "checkpoints")
    ckpt.save(3, state, {"phase": "rl"})
    ckpt.close()
    expected = jax.tree.map(np.asarray, state)

    # the run's own restore path: a run on another mesh restores into its fresh (sharded) state
    restoring, restoring_ctx = built(run_config((8, 1, 1)))
    step, restored, meta = Checkpointer(tmp_path / "checkpoints").restore_latest(
        lambda meta: fresh_state(restoring_ctx, restoring, meta["phase"]))
    assert step == 3 and meta["phase"] == "rl"
    up_proj = restored.params["layers"][0]["mlp"]["up_proj"][...]
    assert up_proj.sharding.mesh.shape == restoring_ctx.mesh.shape and up_proj.sharding.is_fully_replicated
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored), expected)

    # onto one device, from an abstract target
    one = single_device_mesh()
    _, on_one, _ = Checkpointer(tmp_path / "checkpoints").restore_latest(lambda meta: abstract_state(state, one))
    assert {d for leaf in jax.tree.leaves(on_one) for d in leaf.devices()} == {jax.devices()[0]}
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, on_one), expected)
