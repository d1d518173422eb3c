"""Helpers for the recipe tests: a recipe and its run context as the loop builds them, a warm start
computed once and shared, a run of the loop that starts from given params instead of its own
warm start (the workdir is seeded with the checkpoint the warm start would leave), and the same
params written as a Hugging Face directory, for runs that start from it as from a pretrained model
(`model.init_from`)."""
from __future__ import annotations

import copy

import jax
import numpy as np

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import validate
from jaxrl_self.models.checkpoint_io import export_hf_checkpoint
from jaxrl_self.models.convert import special_token_ids, write_tokenizer
from jaxrl_self.recipes import build_recipe
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.train.context import RunContext
from jaxrl_self.train.loop import AFTER_SFT, train
from jaxrl_self.train.sft import make_sft_step
from jaxrl_self.train.workdir import CHECKPOINT_DIR


def built(config, recipe=None):
    """(recipe, run context) of `config` (and its recipe, or `recipe`), set up as `train.loop.train` sets them up."""
    recipe = recipe or build_recipe(config)
    ctx = RunContext(config, scratch_tokenizer=recipe.scratch_tokenizer(config), extend_tokenizer=recipe.extend_tokenizer)
    recipe.setup(ctx)
    return recipe, ctx


def warm_start_params(config):
    """The params after the loop's warm start of `config` (`sft.steps` SFT steps), as host arrays."""
    recipe, ctx = built(config)
    state = ctx.sft_state()
    step_fn = make_sft_step(ctx.graphdef, ctx.sft_optimizer, ctx.mesh)
    iterator = PromptIterator(recipe.sft_pool_size(ctx), config.sft.batch_size, config.seed)
    for step in range(1, config.sft.steps + 1):
        state, _ = step_fn(state, ctx.shard(recipe.sft_batch(ctx, iterator.next(), step)))
    return jax.tree.map(np.asarray, state.params)


def train_from_params(config, workdir, params, after_sft: dict | None = None, recipe=None) -> dict:
    """`train_and_evaluate(config, workdir)` with `params` as the warm start's result: only the
    training steps run. `after_sft`: the held-out results recorded for the warm start (default:
    evaluated). Returns the summary."""
    recipe, ctx = built(config)
    state = recipe.rl_state(ctx, jax.tree.map(jax.numpy.asarray, params))
    if after_sft is None:
        after_sft = recipe.evaluate(ctx, state, full=True)
        after_sft.pop("samples", None)
    ckpt = Checkpointer(workdir / CHECKPOINT_DIR)
    ckpt.save(config.sft.steps, state, {"phase": "rl", "rl_step": 0, "extra": recipe.initial_extra(ctx),
                                        "results": {AFTER_SFT: after_sft}})
    ckpt.close()
    return train(config, workdir, recipe)


def write_pretrained(config, params, directory) -> str:
    """`params` of `config`'s model written as a Hugging Face model directory (config.json,
    model.safetensors, the task's tokenizer); returns its path, for `model.init_from`. A recipe's
    extra tokens (`Recipe.extend_tokenizer`) are left out of the tokenizer files, as a pretrained
    model's tokenizer lacks them: the run adds them again after the vocabulary, at the ids (and the
    embedding rows) they had here."""
    _, ctx = built(config)
    tokenizer = getattr(ctx.tokenizer, "base", ctx.tokenizer)
    export_hf_checkpoint(ctx.model_config, params, str(directory), extra_config=special_token_ids(tokenizer))
    write_tokenizer(tokenizer, str(directory))
    return str(directory)


def pretrained_config(config, init_from: str):
    """`config` starting from the model at `init_from`, with no warm start of its own."""
    config = copy.deepcopy(config)
    config.model.init_from = init_from
    config.sft.steps = 0
    validate(config)
    return config
