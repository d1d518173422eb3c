"""Mesh sizes from the config (-1 fills the rest, clear errors) and the logical-axis rule table."""
from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P
from sharding_helpers import mesh_of, tiny_model_config

from jaxrl_self.config import ConfigError, load_config_file, validate, validate_devices
from jaxrl_self.models.kv_cache import KVCache
from jaxrl_self.parallel import (
    LOGICAL_AXIS_RULES,
    batch_sharding,
    kv_cache_shardings,
    logical_to_spec,
    make_mesh,
    mesh_shape,
    process_rows,
    shard_batch,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_mesh_shape_fills_and_checks():
    assert mesh_shape(-1, 1, 1, 8) == (8, 1, 1)
    assert mesh_shape(2, -1, 2, 8) == (2, 2, 2)
    assert mesh_shape(1, 4, 2, 8) == (1, 4, 2)
    with pytest.raises(ValueError, match="multiply to 4 devices, but there are 8"):
        mesh_shape(2, 2, 1, 8)
    with pytest.raises(ValueError, match="do not divide the 8 devices"):
        mesh_shape(-1, 3, 1, 8)
    with pytest.raises(ValueError, match="at most one -1"):
        mesh_shape(-1, -1, 1, 8)


def test_make_mesh_axes_and_device_count():
    mesh = mesh_of((2, 2, 2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    assert mesh.axis_types == (AxisType.Auto,) * 3
    one = make_mesh(ml_collections.ConfigDict(dict(num_devices=1, data=-1, fsdp=1, tensor=1)))
    assert one.devices.size == 1
    everything = make_mesh(ml_collections.ConfigDict(dict(num_devices=0, data=-1, fsdp=2, tensor=1)))
    assert dict(everything.shape) == {"data": 4, "fsdp": 2, "tensor": 1}
    with pytest.raises(ValueError, match="num_devices=16"):
        make_mesh(ml_collections.ConfigDict(dict(num_devices=16, data=-1, fsdp=1, tensor=1)))


def test_rules_map_parameters_and_fall_back_to_replication():
    mesh = mesh_of((2, 2, 2))
    assert logical_to_spec(("vocab", "embed"), (64, 32), mesh) == P(("fsdp", "tensor"))  # fsdp used: embed unsplit
    assert logical_to_spec(("vocab", "embed"), (6, 32), mesh) == P(None, "fsdp")  # 6 rows do not split 4 ways
    assert logical_to_spec(("embed", "heads", "head_dim"), (32, 4, 16), mesh) == P("fsdp", "tensor")
    assert logical_to_spec(("embed", "kv_heads", "head_dim"), (32, 1, 16), mesh) == P("fsdp")  # 1 kv head: replicated
    assert logical_to_spec(("head_dim",), (16,), mesh) == P()
    assert logical_to_spec(("batch", None), (16, 5), mesh) == P(("data", "fsdp"))
    assert logical_to_spec(("batch",), (6,), mesh) == P()  # 6 rows do not split 4 ways
    assert logical_to_spec(("embed", "embed"), (32, 32), mesh) == P("fsdp")  # a mesh axis shards one dim at most
    assert logical_to_spec(("batch",), (16,), mesh_of((1, 8, 1))) == P("fsdp")  # size-1 axes are left out
    with pytest.raises(ValueError, match="no rule"):
        logical_to_spec(("experts",), (8,), mesh)
    assert dict(LOGICAL_AXIS_RULES)["embed"] == "fsdp"


def test_batch_and_kv_cache_shardings():
    mesh = mesh_of((2, 2, 2))
    assert batch_sharding(mesh, (16, 7)).spec == P(("data", "fsdp"))
    cache = KVCache.zeros(tiny_model_config(num_kv_heads=2, num_heads=4, head_dim=16), batch=8, length=12)
    shardings = kv_cache_shardings(cache, mesh)
    assert shardings.keys[0].spec == P(("data", "fsdp"), "tensor")  # [B, K, S, D]
    placed = jax.device_put(cache, shardings)
    assert placed.values[0].addressable_shards[0].data.shape == (2, 1, 12, 16)


def test_process_rows_inverts_shard_batch_from_any_sharding():
    mesh = mesh_of((2, 2, 2))
    rows = {"tokens": np.arange(64, dtype=np.int32).reshape(16, 4), "mask": np.arange(16) % 3 == 0}
    placed = shard_batch(rows, mesh)
    assert placed["tokens"].sharding.spec == P(("data", "fsdp"))
    columns = jax.device_put(rows["tokens"], NamedSharding(mesh, P(None, "tensor")))  # e.g. a jitted output
    for tree, expected in ((placed, rows), (columns, rows["tokens"])):
        local = process_rows(tree, mesh)  # one process: all rows, in order, once (not once per tensor replica)
        assert jax.tree.all(jax.tree.map(lambda a, b: isinstance(a, np.ndarray) and np.array_equal(a, b), local, expected))


def test_validate_devices_with_several_processes():
    config = load_config_file(CONFIGS / "default.py")
    config.mesh.update(dict(num_devices=0, data=2, fsdp=2, tensor=2))
    config.rl.update(dict(prompts_per_step=4, group_size=8))
    config.sft.batch_size = 8
    validate_devices(config, 8, 1)
    validate_devices(config, 8, 2)  # 2 processes x 4 devices: each owns two of the four batch shards
    with pytest.raises(ConfigError, match="must be a multiple of the 8 processes"):
        validate_devices(config, 8, 8)  # a tensor pair would span two processes
    config.rl.prompts_per_step = 2  # 16 rows split over 4 shards, but the 2 prompts cannot be
    validate_devices(config, 8, 1)
    with pytest.raises(ConfigError, match="config.rl.prompts_per_step: must be divisible by the data-parallel size 4"):
        validate_devices(config, 8, 2)


def test_config_validation_of_mesh_and_distributed():
    config = load_config_file(CONFIGS / "default.py")
    validate(config)
    config.mesh.update(dict(num_devices=8, data=2, fsdp=2, tensor=1))
    with pytest.raises(ConfigError, match="config.mesh: data\\*fsdp\\*tensor = 4 must equal mesh.num_devices = 8"):
        validate(config)
    config.mesh.update(dict(data=-1, fsdp=-1))
    with pytest.raises(ConfigError, match="at most one of data/fsdp/tensor may be -1"):
        validate(config)
    config.mesh.update(dict(num_devices=0, fsdp=0))
    with pytest.raises(ConfigError, match="config.mesh.fsdp: must be >= 1 or -1"):
        validate(config)
    config.mesh.fsdp = 1
    config.distributed.update(dict(coordinator_address="localhost:1234", num_processes=2, process_id=2))
    with pytest.raises(ConfigError, match="config.distributed.process_id"):
        validate(config)
