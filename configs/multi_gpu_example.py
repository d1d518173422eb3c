"""GRPO on GSM8K from Qwen2.5-0.5B-Instruct on one host with several GPUs (`pip install -e ".[cuda]"`).

One process drives every local GPU: no `jax.distributed` needed. Parameters and Adam moments are
sharded over all GPUs (FSDP, ZeRO-3 style) and the batch rows are split over them too; set
`mesh.tensor` > 1 to also split heads/MLP/vocab when the model no longer fits that way.

  jaxrl-self train --config configs/multi_gpu_example.py \
    --config.model.init_from=/models/Qwen2.5-0.5B-Instruct \
    --config.task.train_file=/data/gsm8k_train.jsonl --config.task.test_file=/data/gsm8k_test.jsonl
"""
import pathlib

from jaxrl_self.config import load_config_file


def _base_config():
    """configs/qwen2_gsm8k_grpo.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).with_name("qwen2_gsm8k_grpo.py"))


def get_config():
    config = _base_config()
    config.mesh.num_devices = 0  # every GPU of the host
    config.mesh.data = 1
    config.mesh.fsdp = -1  # shard params, optimizer state and batch rows over all GPUs
    config.mesh.tensor = 1
    # prompts_per_step * group_size = 256 rows, micro_batches 8 -> 32 rows per micro-batch: divisible by 8 GPUs
    return config
