"""Evaluate or sample from a finished (or running) run directory's latest or best checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import ml_collections

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import ConfigError
from jaxrl_self.eval.evaluate import evaluate, generate
from jaxrl_self.recipes import build_recipe
from jaxrl_self.train.context import RunContext
from jaxrl_self.train.loop import fresh_state
from jaxrl_self.train.workdir import BEST_CHECKPOINT_DIR, CHECKPOINT_DIR, CONFIG_FILE

CHECKPOINTS = {"latest": CHECKPOINT_DIR, "best": BEST_CHECKPOINT_DIR}  # which -> subdirectory of the run


def load_run(workdir: Path, which: str = "latest"):
    """(RunContext, params) of `workdir`'s newest checkpoint ("latest") or of its best held-out accuracy ("best")."""
    if which not in CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {sorted(CHECKPOINTS)}, got {which!r}")
    config_path = Path(workdir) / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(f"{workdir} is not a run directory: {config_path} is missing")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    recipe = build_recipe(config)
    run = RunContext(config, scratch_tokenizer=recipe.scratch_tokenizer(config), extend_tokenizer=recipe.extend_tokenizer)
    recipe.setup(run)
    directory = Path(workdir) / CHECKPOINTS[which]
    ckpt = Checkpointer(directory)
    restored = ckpt.restore_latest(lambda meta: fresh_state(run, recipe, meta["phase"]))
    ckpt.close()
    if restored is None:
        raise ConfigError(f"no restorable checkpoint in {directory}")
    return run, restored[1].params


def evaluate_run(workdir, num_samples: int = 1, ks=(1,), temperature=None, checkpoint: str = "latest") -> dict:
    """Accuracy and pass@k / maj@k / mean@k on the run's held-out split (greedy when num_samples == 1)."""
    run, params = load_run(workdir, checkpoint)
    if temperature is None:
        temperature = 0.0 if num_samples == 1 else 1.0
    sampler = run.sampler(num_samples, temperature)
    results = evaluate(sampler, params, run.task, run.test_examples, run.prompt_len, run.config.eval.batch_size, ks=ks)
    results.update(temperature=temperature, num_samples=num_samples, checkpoint=checkpoint)
    return results


def sample_run(workdir, prompts, num_samples: int = 1, temperature: float = 0.0, seed: int = 0,
               checkpoint: str = "latest") -> list[list[str]]:
    """`num_samples` completions (text) of each prompt: `[len(prompts)][num_samples]`."""
    run, params = load_run(workdir, checkpoint)
    sampler = run.sampler(num_samples, temperature)
    return generate(sampler, params, run.tokenizer, prompts, run.prompt_len, jax.random.key(seed), len(prompts))
