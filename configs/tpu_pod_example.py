"""GRPO on GSM8K from Qwen2.5-0.5B-Instruct on a Cloud TPU pod slice (every worker runs this; `pip install -e ".[tpu]"`).

Each TPU VM worker is one JAX process; `distributed.auto` lets `jax.distributed.initialize()` find
the coordinator, the process count and this worker's id from the TPU metadata. The mesh spans all
chips of all workers: FSDP within the slice, plus a `data` axis of 2 (parameters replicated twice,
e.g. across the two halves of a v5e-32). Checkpoints and the workdir must be on storage every
worker sees (a `gs://` bucket or a shared filesystem); the model and the data files too.

  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=all --command="cd jaxrl_self && \
    jaxrl-self train --config configs/tpu_pod_example.py --workdir /mnt/shared/runs/gsm8k_pod \
      --config.model.init_from=/mnt/shared/models/Qwen2.5-0.5B-Instruct \
      --config.task.train_file=/mnt/shared/data/gsm8k_train.jsonl --config.task.test_file=/mnt/shared/data/gsm8k_test.jsonl"
"""
import pathlib

from jaxrl_self.config import load_config_file


def _base_config():
    """configs/qwen2_gsm8k_grpo.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).with_name("qwen2_gsm8k_grpo.py"))


def get_config():
    config = _base_config()
    config.distributed.auto = True  # jax.distributed.initialize() from the TPU metadata
    config.mesh.num_devices = 0  # every chip of every worker
    config.mesh.data = 2
    config.mesh.fsdp = -1
    config.mesh.tensor = 1
    config.rl.prompts_per_step = 64  # 64 x 8 = 512 rows: divisible by the chips of slices up to 64 chips
    config.rl.micro_batches = 8
    return config
