"""A complete recipe in a few lines: online rejection-sampling fine-tuning (RAFT / online STaR).

Each training step samples `rl.group_size` completions for `rl.prompts_per_step` training prompts,
keeps those the task's verifier accepts, and takes one SFT step on them (the rows of the others are
masked out). Everything else (warm start, mesh, checkpoints and resume, preemption, evaluation,
metrics, report) comes from the shared loop. Run it from Python:

    from jaxrl_self.config import load_config_file
    from jaxrl_self.train.loop import train
    config = load_config_file("configs/default.py")
    train(config, "runs/raft", RAFT(config))

or name it in a config, `config.method.loop = "raft_recipe:RAFT"` (the module on `PYTHONPATH`).
"""
import jax
import numpy as np

from jaxrl_self.config import ConfigError
from jaxrl_self.train.loop import Recipe
from jaxrl_self.train.sft import make_sft_step


class RAFT(Recipe):
    name = "RAFT"

    def __init__(self, config):
        super().__init__(config)  # config.method holds no option RAFT does not declare (config_defaults)
        if config.rl.group_size < 1:  # checked before anything is built
            raise ConfigError(f"config.rl.group_size: must be >= 1, got {config.rl.group_size}")

    def setup(self, ctx):
        rl = ctx.config.rl
        self.sampler = ctx.sampler(rl.group_size, rl.temperature)
        self.update = make_sft_step(ctx.graphdef, ctx.rl_optimizer, ctx.mesh)

    def rl_state(self, ctx, params):
        return ctx.rl_state(params, with_reference=False)

    def initial_extra(self, ctx):
        return {"iterator": None}  # where the prompt stream is: checkpointed with the state

    def step(self, ctx, state, extra, rl_step, key, control):
        rl = ctx.config.rl
        iterator = ctx.prompt_iterator(len(ctx.train_examples), rl.prompts_per_step, extra["iterator"])
        examples = [ctx.train_examples[i] for i in iterator.next()]
        tokens, mask = ctx.encode_prompts([e.prompt for e in examples])
        samples = ctx.sample(self.sampler, state.params, tokens, mask, key)
        completions, completion_mask = np.asarray(samples.tokens), np.asarray(samples.mask)
        references = [e.reference for e in examples for _ in range(rl.group_size)]
        correct = np.array([ctx.task.score(ctx.tokenizer.decode(t[m]), reference)["correct"]
                            for t, m, reference in zip(completions, completion_mask, references)], bool)
        batch = {"prompt_tokens": np.repeat(tokens, rl.group_size, 0), "prompt_mask": np.repeat(mask, rl.group_size, 0),
                 "completion_tokens": completions, "completion_mask": completion_mask & correct[:, None]}
        if correct.any():
            state, metrics = self.update(state, ctx.shard(batch))
            metrics = jax.device_get(metrics)
        else:
            metrics = {}
        return state, {"iterator": iterator.get_state()}, {**metrics, "accuracy/train": float(correct.mean())}

    def progress(self, metrics):
        return {"acc": metrics["accuracy/train"]}
