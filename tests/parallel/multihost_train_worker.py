"""One process of the `train_and_evaluate` test in `test_multihost.py`: the real loop on a tiny job.

Usage: python multihost_train_worker.py PROCESS_ID NUM_PROCESSES PORT WORKDIR OUT_JSON. With
NUM_PROCESSES=1 the process runs alone (no `jax.distributed`): the reference. The parent sets
JAX_PLATFORMS=cpu and XLA_FLAGS (8 devices in all, on a 2x2x2 mesh either way).

The job: SFT warm start, then GRPO with the task's verifier as reward plus DAPO's length shaping
(so that most groups have signal) and zero-signal groups masked out. Two recorders stand in for
the loop's own classes without changing what they do: every batch of prompt indices a
`PromptIterator` hands out, and every metrics row the loop writes (on every process; only process
0 writes files). Both, the summary and the process index go to OUT_JSON.
"""
import json
import sys
from pathlib import Path

import jax
import numpy as np

from jaxrl_self.config import load_config_file, validate
from jaxrl_self.metrics import MetricsWriter
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.recipes import train_and_evaluate
from jaxrl_self.train import context, loop

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SFT_STEPS, RL_STEPS = 2, 3
records = {"batches": [], "metrics": []}


class RecordingIterator(PromptIterator):
    def next(self) -> np.ndarray:
        indices = super().next()
        records["batches"].append({"seed": self.seed, "indices": indices.tolist()})
        return indices


class RecordingWriter(MetricsWriter):
    def write(self, step, metrics) -> None:
        records["metrics"].append({"step": step, **{k: float(np.asarray(v)) for k, v in metrics.items()}})
        super().write(step, metrics)


def tiny_config(process_id: int, num_processes: int, port: int):
    config = load_config_file(CONFIGS / "default.py")
    config.log_every = 1
    config.task.update(dict(digits=1, test_size=8))
    config.model.update(dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, head_dim=16,
                             intermediate_size=64, max_position_embeddings=64))
    config.sft.update(dict(steps=SFT_STEPS, batch_size=8, warmup_steps=0))
    config.rl.update(dict(steps=RL_STEPS, prompts_per_step=8, group_size=2, max_new_tokens=16, overlong_max_len=16,
                          overlong_cache_len=16, filter_zero_advantage_groups=True))
    config.eval.update(dict(num_examples=8, batch_size=8, every=2))
    config.checkpoint.every = 2
    config.mesh.update(dict(num_devices=0, data=2, fsdp=2, tensor=2))
    if num_processes > 1:
        config.distributed.update(dict(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                                       process_id=process_id))
    validate(config)
    return config


def main(process_id: int, num_processes: int, port: int, workdir: str, out_path: str) -> None:
    loop.PromptIterator, context.PromptIterator, loop.MetricsWriter = RecordingIterator, RecordingIterator, RecordingWriter
    summary = train_and_evaluate(tiny_config(process_id, num_processes, port), workdir)
    with open(out_path, "w") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "devices": jax.device_count(), "summary": summary, **records}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
