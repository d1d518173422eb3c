"""Device mesh, logical-axis sharding rules, sharded placement of state and batches, multi-host start-up."""
from jaxrl_self.parallel.distributed import initialize_distributed, is_main_process
from jaxrl_self.parallel.mesh import MESH_AXES, make_mesh, mesh_shape
from jaxrl_self.parallel.rules import LOGICAL_AXIS_RULES, SAMPLING_AXIS_RULES, activation_mesh, constrain, logical_to_spec
from jaxrl_self.parallel.sharding import (
                                          abstract_state,
                                          batch_sharding,
                                          bytes_per_device,
                                          kv_cache_shardings,
                                          process_rows,
                                          shard_batch,
                                          shard_state,
                                          sharding_for,
                                          state_shardings,
)

__all__ = [
    "LOGICAL_AXIS_RULES", "MESH_AXES", "SAMPLING_AXIS_RULES", "activation_mesh", "constrain", "abstract_state", "batch_sharding", "bytes_per_device", "initialize_distributed",
    "is_main_process", "kv_cache_shardings", "logical_to_spec", "make_mesh", "mesh_shape", "process_rows", "shard_batch",
    "shard_state", "sharding_for", "state_shardings",
]
