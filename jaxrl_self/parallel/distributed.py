"""Multi-host start-up: join the processes of a run with `jax.distributed.initialize`.

One process per host (per GPU host, per TPU VM worker) runs the same program. Call
`initialize_distributed(config.distributed)` before anything touches a JAX device. Three ways in:

- `coordinator_address` set: the explicit form, with `num_processes` and `process_id`
  (e.g. `--config.distributed.coordinator_address=10.0.0.2:1234 --config.distributed.process_id=$RANK`).
- `auto=True`: `jax.distributed.initialize()` with no arguments; JAX finds the coordinator, the
  process count and this process's id on a Cloud TPU pod slice, under SLURM, Open MPI or on GKE
  (and reads `JAX_COORDINATOR_ADDRESS` from the environment).
Otherwise (the default) the run is a single process and nothing happens.

After start-up, `jax.devices()` lists every device of every process; each process reads its own
slice of every global batch (`PromptIterator(shard_index=jax.process_index(),
shard_count=jax.process_count())`), places it with `shard_batch`, takes back the rows it owns
from a global result with `process_rows` (to score them on its host), and only
`is_main_process()` writes logs, metrics and reports.
"""
from __future__ import annotations

import jax


def initialize_distributed(distributed_config) -> bool:
    """Joins this process to the run's other processes; returns True when the run is multi-process.

    `distributed_config` is `config.distributed` (coordinator_address, num_processes, process_id,
    auto). Idempotent: a second call does nothing.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if distributed_config.coordinator_address:
        jax.distributed.initialize(coordinator_address=distributed_config.coordinator_address,
                                   num_processes=distributed_config.num_processes,
                                   process_id=distributed_config.process_id)
    elif distributed_config.auto:
        jax.distributed.initialize()
    else:
        return False
    return jax.process_count() > 1


def is_main_process() -> bool:
    """Whether this is process 0, the one that logs, writes metrics and reports."""
    return jax.process_index() == 0
