"""One process of the two-process test (`test_multihost.py`): a few GRPO steps on a mesh spanning processes.

Usage: python multihost_worker.py PROCESS_ID NUM_PROCESSES PORT OUT_JSON. The parent sets
JAX_PLATFORMS=cpu and XLA_FLAGS (4 devices per process). Each process reads its own shard of
the prompts, samples on the global mesh, rewards completions by length (a JAX reward with
signal in most groups), and runs the real `make_rl_update`; it writes its losses and gradient
norms to OUT_JSON, with the result of DAPO's `collect_groups` on rounds where only process 1
lacks signal at first.
"""
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxrl_self.config import load_config_file
from jaxrl_self.parallel import (
    initialize_distributed,
    make_mesh,
    shard_batch,
    shard_state,
)
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.train.dynamic_sampling import collect_groups, make_group_merger
from jaxrl_self.models.config import model_config_from
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.train.rl_step import compute_advantages, make_rl_update
from jaxrl_self.tasks.encoding import encode_prompts
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STEPS = 3
PROMPTS_PER_PROCESS = 4


def dynamic_sampling(group_size: int = 2, prompts: int = 2) -> dict:
    """`collect_groups` where process 1's groups have no signal in round 0 (process 0's all do):
    both processes must run a second round and report the same metrics."""

    def draw(round_index):
        signal = round_index > 0 or jax.process_index() == 0
        rewards = np.tile(np.asarray([1.0, 0.0 if signal else 1.0], np.float32), prompts)
        rollout = {"rows": np.arange(prompts * group_size, dtype=np.float32) + 10 * round_index}
        metrics = {"reward/reward": rewards.mean(), "verifier_failures/timeout": np.int32(jax.process_index())}
        return rollout, rewards, metrics

    rollout, _, metrics = collect_groups(draw, make_group_merger(group_size), group_size=group_size, max_rounds=3,
                                         filter_groups=True)
    return {"metrics": metrics, "rows": np.asarray(rollout["rows"]).tolist()}


def main(process_id: int, num_processes: int, port: int, out_path: str) -> None:
    distributed = ml_collections.ConfigDict(dict(coordinator_address=f"localhost:{port}", num_processes=num_processes,
                                                 process_id=process_id, auto=False))
    initialize_distributed(distributed)
    config = load_config_file(CONFIGS / "default.py")
    config.task.update(dict(digits=1, max_prompt_len=8, test_size=8))
    config.model.update(dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, head_dim=16,
                             intermediate_size=64, max_position_embeddings=32))
    rl = config.rl
    rl.update(dict(group_size=4, max_new_tokens=8, prompts_per_step=PROMPTS_PER_PROCESS * num_processes))
    mesh = make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=-1)))

    task = build_task(config.task)
    tokenizer = task.tokenizer
    graphdef, params = init_model(model_config_from(config, tokenizer.vocab_size), config.seed)
    optimizer = make_optimizer(rl.learning_rate, STEPS)
    state = shard_state(init_train_state(params, optimizer, config.seed, with_reference=False), mesh)
    sampler = make_sampler(graphdef, SamplingConfig(max_new_tokens=rl.max_new_tokens, eos_id=tokenizer.eos_id,
                                                    pad_id=tokenizer.pad_id, group_size=rl.group_size, temperature=1.0,
                                                    vocab_size=tokenizer.vocab_size))
    update = make_rl_update(graphdef, optimizer, rl)

    @jax.jit
    def train_batch(prompt_tokens, prompt_mask, samples):
        rewards = jnp.sum(samples.mask, axis=-1).astype(jnp.float32) / rl.max_new_tokens
        return RolloutBatch(prompt_tokens=jnp.repeat(prompt_tokens, rl.group_size, 0),
                            prompt_mask=jnp.repeat(prompt_mask, rl.group_size, 0),
                            completion_tokens=samples.tokens, completion_mask=samples.mask,
                            **compute_advantages(rl, rewards, samples.mask))

    examples = task.examples("train")
    iterator = PromptIterator(len(examples), PROMPTS_PER_PROCESS, config.seed,
                              shard_index=jax.process_index(), shard_count=jax.process_count())
    losses, grad_norms = [], []
    for step in range(1, STEPS + 1):
        indices = iterator.next()
        tokens, mask = encode_prompts(tokenizer, [examples[i].prompt for i in indices], config.task.max_prompt_len)
        tokens, mask, ids = shard_batch((np.asarray(tokens), np.asarray(mask), np.asarray(indices, np.int32)), mesh)
        key = jax.random.fold_in(jax.random.key(config.seed), step)
        samples = sampler(state.params, tokens, mask, key, prompt_ids=ids)
        state, metrics = update(state, train_batch(tokens, mask, samples), key)
        losses.append(float(metrics["loss"]))
        grad_norms.append(float(metrics["grad_norm"]))
    with open(out_path, "w") as f:
        json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(),
                   "devices": jax.device_count(), "losses": losses, "grad_norms": grad_norms,
                   "dynamic_sampling": dynamic_sampling()}, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
