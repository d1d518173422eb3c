"""The outer loop every recipe runs in: warm start, training steps, evaluation, checkpoints, report.

`train(config, workdir, recipe)` is the single entry point (as in the Flax examples). A run is:

  1. SFT warm start: `sft.steps` steps on the recipe's demonstrations (`Recipe.sft_batch`);
  2. a full held-out evaluation ("after SFT");
  3. `Recipe.num_steps` training steps (`Recipe.step`: an RL update, or one round of an
     iterative recipe), evaluated where `Recipe.eval_name` says, the last one always.

Global step numbering: SFT steps are 1..sft.steps, training steps follow. Everything a resumed
run needs is checkpointed in `<workdir>/checkpoints` every `checkpoint.every` steps and at the
end: the train state, the phase and step, the prompt iterator, the recipe's own state
(`Recipe.initial_extra`: buffers, baselines, counters; JSON) and the evaluations so far. A run
killed at any moment and started again produces the same parameters and metrics as one never
interrupted. SIGTERM/SIGINT stop it with a checkpoint (`faults.Preempted`, exit 75), as does a
run of non-finite updates (`faults.NonFiniteStop`); the step with the best held-out accuracy is
kept in `<workdir>/best_checkpoint`. docs/recipes.md describes how to write a recipe.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Optional

import jax
import numpy as np

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import check_recipe_keys, config_to_json, validate_devices
from jaxrl_self.metrics import MetricsWriter, ProgressBar
from jaxrl_self.report import write_report
from jaxrl_self.parallel import initialize_distributed, is_main_process
from jaxrl_self.tasks.encoding import sft_batch
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.train.context import RunContext
from jaxrl_self.train.faults import RunControl, StopSignal, describe_step
from jaxrl_self.train.sft import make_sft_step
from jaxrl_self.train.state import CHECKPOINTED_PART
from jaxrl_self.train.workdir import (BEST_CHECKPOINT_DIR, CHECKPOINT_DIR, claim_workdir, hold_workdir_lock,
                                      prepare_workdir)

log = logging.getLogger(__name__)

AFTER_SFT = "after SFT"


class Recipe:
    """What a recipe supplies to `train`; every method has the default of a plain RL recipe.

    A recipe keeps what it builds in `setup` (samplers, jitted steps) on itself; its state that
    changes during a run lives in the train state and in `extra` (a JSON dict, checkpointed).
    """

    name = "recipe"
    # the recipe's own `config.method` options and their defaults (their types are the defaults'); a
    # config sets only those it changes
    config_defaults: dict = {}

    def __init__(self, config):
        """Checks the recipe's own `config.method` options (unknown ones, types; missing ones get their
        defaults), raising ConfigError, before anything is built. A subclass checks their values next."""
        check_recipe_keys(config, self.name, self.config_defaults)

    def scratch_tokenizer(self, config):
        """The tokenizer of a model from scratch when the recipe has no task of the registry, else None."""
        return None

    extend_tokenizer = None  # or `tokenizer -> tokenizer`, adding special tokens (`RunContext`)

    def setup(self, ctx: RunContext) -> None:
        """Builds the recipe's own parts from the run context, before any checkpoint is read."""

    def num_steps(self, config) -> int:
        """Training steps after the warm start."""
        return config.rl.steps

    def sft_pool_size(self, ctx: RunContext) -> int:
        """How many demonstrations the warm start draws its batches from."""
        return len(ctx.train_examples)

    def sft_batch(self, ctx: RunContext, indices: np.ndarray, step: int) -> dict:
        """A warm-start batch (`tasks.encoding.encode_pairs` arrays, numpy) of the demonstrations
        `indices` `[sft.batch_size]`; default: the task's worked solutions."""
        return sft_batch(ctx.tokenizer, [ctx.train_examples[i] for i in indices], ctx.prompt_len, ctx.new_tokens)

    def rl_state(self, ctx: RunContext, params):
        """The training phase's first state from the warm-started `params`."""
        return ctx.rl_state(params, with_reference=False)

    def initial_extra(self, ctx: RunContext) -> dict:
        """The recipe's own state at the first training step (JSON-serialisable)."""
        return {}

    def step(self, ctx: RunContext, state, extra: dict, rl_step: int, key, control: RunControl):
        """One training step: returns (state, extra, metrics); `metrics["skipped_nonfinite"]`, when
        present, counts towards the non-finite stop."""
        raise NotImplementedError

    def eval_name(self, config, rl_step: int) -> Optional[str]:
        """Whether training step `rl_step` ends with an evaluation: None (no), "" (logged only) or a
        name under which it is kept for the summary; the last step's must be a name."""
        last = rl_step == self.num_steps(config)
        return "after RL" if last else ("" if rl_step % config.eval.every == 0 else None)

    def evaluate(self, ctx: RunContext, state, full: bool) -> dict:
        """Held-out metrics (`eval/...`) of `state`; `full` after the warm start and for named
        evaluations. `eval/accuracy`, when present, picks the best checkpoint; `samples` (a few
        prompt/completion dicts) goes to the report; a task of several problem categories adds
        `eval/<category>/accuracy`."""
        results = ctx.evaluate(state.params)
        by_category = {f"eval/{name}/accuracy": value for name, value in results.get("category_accuracy", {}).items()}
        return {"eval/accuracy": results["accuracy"], "eval/format_ok": results["format_ok"], **by_category,
                "samples": results["samples"]}

    def summary(self, ctx: RunContext, results: dict) -> dict:
        """The run's summary from the named evaluations `{name: metrics}`."""
        names = [n for n in results[AFTER_SFT] if n != "samples"]
        return {name: {when: values[name] for when, values in results.items() if name in values} for name in names}

    def progress(self, metrics: dict) -> dict:
        """A few scalars for the progress bar."""
        return {k: metrics[k] for k in ("reward/mean", "eval/accuracy") if k in metrics}


def warm_start(ctx: RunContext, recipe: Recipe, state, meta: dict, control: RunControl, writer: MetricsWriter):
    """The SFT steps left (`sft_steps`), the full evaluation after them, and the switch to
    the training state. Returns that state and meta, checkpointed at step sft.steps."""
    cfg = ctx.config
    if cfg.sft.steps:  # none for a pretrained model used as it is (its recipe may then have no demonstrations)
        state = sft_steps(ctx, recipe, state, meta, control, writer)
    state = recipe.rl_state(ctx, state.params)
    results = recipe.evaluate(ctx, state, full=True)
    samples = results.pop("samples", None)
    when = f"after the SFT warm start ({cfg.sft.steps} steps)" if cfg.sft.steps else "before training (sft.steps = 0)"
    log.info("%s: held-out evaluation %s: %s", recipe.name, when, format_scalars(results))
    writer.write(cfg.sft.steps, results)
    meta = {**meta, "phase": "rl", "rl_step": 0, "iterator": None, "extra": recipe.initial_extra(ctx),
            "results": {AFTER_SFT: results}}
    control.save(cfg.sft.steps, state, meta, due=True, accuracy=results.get("eval/accuracy"))
    return state, meta, samples


def sft_steps(ctx: RunContext, recipe: Recipe, state, meta: dict, control: RunControl, writer: MetricsWriter):
    """The SFT steps `meta["sft_step"]+1 .. sft.steps` on the recipe's demonstrations, each
    checkpointed when due but the last; returns the state after them."""
    cfg = ctx.config
    # each process reads its own shard of the demonstrations; the global batch is sft.batch_size rows
    iterator = PromptIterator(recipe.sft_pool_size(ctx), cfg.sft.batch_size // jax.process_count(), cfg.seed,
                              shard_index=jax.process_index(), shard_count=jax.process_count())
    if meta.get("iterator"):
        iterator.set_state(meta["iterator"])
    step_fn = make_sft_step(ctx.graphdef, ctx.sft_optimizer, ctx.mesh)
    start = int(meta.get("sft_step", 0))  # not state.step: that does not count skipped (non-finite) updates
    bar = ProgressBar(cfg.sft.steps, "SFT warm start", initial=start)
    for step in range(start + 1, cfg.sft.steps + 1):
        state, metrics = step_fn(state, ctx.shard(recipe.sft_batch(ctx, iterator.next(), step)))
        counters = control.observe(step, metrics)
        if step % cfg.log_every == 0 or step == cfg.sft.steps:
            metrics = jax.device_get(metrics)
            writer.write(step, {"phase": 0, **metrics, **counters})
            bar.update(step - bar.count, loss=float(metrics["sft/loss"]))
        if step < cfg.sft.steps:  # the last SFT step is saved by warm_start, as the start of training
            control.save(step, state, {**meta, "phase": "sft", "sft_step": step, "iterator": iterator.get_state()},
                         due=step % cfg.checkpoint.every == 0)
    bar.close()
    return state


def train_steps(ctx: RunContext, recipe: Recipe, state, meta: dict, control: RunControl, writer: MetricsWriter):
    """Training steps `meta["rl_step"]+1 .. recipe.num_steps`: step, evaluate, log, checkpoint.
    Returns (state, meta, the samples of the last evaluation or None)."""
    cfg = ctx.config
    total = recipe.num_steps(cfg)
    extra = meta["extra"]
    bar = ProgressBar(total, recipe.name, initial=int(meta["rl_step"]))
    samples = None
    for rl_step in range(int(meta["rl_step"]) + 1, total + 1):
        step = cfg.sft.steps + rl_step
        started = time.perf_counter()
        state, extra, metrics = recipe.step(ctx, state, extra, rl_step, jax.random.fold_in(ctx.root_key, step), control)
        metrics["time/step_s"] = time.perf_counter() - started
        name = recipe.eval_name(cfg, rl_step)
        meta = {**meta, "rl_step": rl_step, "extra": extra}
        if name is not None:
            results = recipe.evaluate(ctx, state, full=bool(name))
            samples = results.pop("samples", None)
            metrics.update(results)
            log.info("%s step %d/%d: held-out evaluation%s: %s", recipe.name, rl_step, total,
                     f" ({name})" if name else "", format_scalars(results))
            if name:
                meta["results"] = {**meta["results"], name: results}
        if "skipped_nonfinite" in metrics:
            metrics.update(control.observe(step, metrics))
        writer.write(step, metrics)
        bar.update(1, **recipe.progress(metrics))
        control.save(step, state, meta, due=rl_step % cfg.checkpoint.every == 0 or bool(name) or rl_step == total,
                     accuracy=metrics.get("eval/accuracy"))
    bar.close()
    return state, meta, samples


def train(config, workdir, recipe: Recipe) -> dict:
    """Runs (or resumes) `recipe` as `config` describes it in `workdir`; returns the summary.

    Resumes from the newest readable checkpoint in `<workdir>/checkpoints` (metrics.jsonl rows
    after its step are dropped and written again). Holds the workdir's lock (`hold_workdir_lock`)
    from before anything is written until the report is: raises ConfigError naming the holder's
    PID and host when another run holds it. Raises `faults.Preempted` after SIGTERM/SIGINT and
    `faults.NonFiniteStop` after too many non-finite steps in a row, each once a checkpoint of the
    current step is on disk.
    """
    with contextlib.ExitStack() as workdir_lock:
        with StopSignal() as stop_signal:
            initialize_distributed(config.distributed)  # before anything touches the JAX backend
            validate_devices(config, jax.device_count(), jax.process_count())
            workdir = prepare_workdir(config, workdir)
            workdir_lock.enter_context(hold_workdir_lock(workdir, jax.process_index()))  # each process its own file
            ctx = RunContext(config, scratch_tokenizer=recipe.scratch_tokenizer(config),
                             extend_tokenizer=recipe.extend_tokenizer)
            recipe.setup(ctx)
            claim_workdir(config, workdir)
            ckpt = Checkpointer(workdir / CHECKPOINT_DIR, config.checkpoint.max_to_keep, part=CHECKPOINTED_PART)
            best = Checkpointer(workdir / BEST_CHECKPOINT_DIR, max_to_keep=1, best_metric="accuracy", part=CHECKPOINTED_PART)
            samples = None
            try:
                restored = ckpt.restore_latest(lambda meta: fresh_state(ctx, recipe, meta["phase"]))
                if restored:
                    step, state, meta = restored
                    log_restored(step, meta, recipe.num_steps(config), config.sft.steps, ckpt.directory)
                else:
                    step, meta = 0, {"phase": "sft", "config": json.loads(config_to_json(config))}
                    state = fresh_state(ctx, recipe, "sft")
                control = RunControl(config.faults, meta, ckpt, best, stop_signal, sft_steps=config.sft.steps)
                with MetricsWriter(workdir, resume_step=step, is_main_process=is_main_process()) as writer:
                    if meta["phase"] == "sft":
                        state, meta, samples = warm_start(ctx, recipe, state, meta, control, writer)
                    state, meta, last_samples = train_steps(ctx, recipe, state, meta, control, writer)
                    samples = last_samples or samples
            finally:
                ckpt.close()
                best.close()
        summary = recipe.summary(ctx, meta["results"])
        if is_main_process():
            report = write_report(workdir, title=f"jaxrl_self {recipe.name} run: {Path(workdir).name}", summary=summary,
                                  samples=samples or [])
            log.info("report written to %s", report)
    return summary


def format_scalars(results: dict) -> str:
    """"eval/accuracy=0.8125 eval/format_ok=1" from a dict of metrics (non-scalars left out)."""
    return " ".join(f"{key}={float(value):.4g}" for key, value in results.items()
                    if np.ndim(value) == 0 and not isinstance(value, str))


def log_restored(step: int, meta: dict, num_steps: int, sft_steps: int, directory) -> None:
    """Says what a restart found: a run to resume (and in which phase), or a finished run."""
    where = describe_step(step, sft_steps)
    if meta["phase"] == "rl" and int(meta["rl_step"]) >= num_steps:
        log.info("the run already finished at %s (checkpoint in %s): nothing left to train; writing its summary and "
                 "report again (to train longer, raise the number of steps: docs/runs.md)", where, directory)
    else:
        log.info("resuming from the checkpoint at %s in %s", where, directory)


def fresh_state(ctx: RunContext, recipe: Recipe, phase: str):
    """A phase's first state (also the target a checkpoint of that phase restores into)."""
    return ctx.sft_state() if phase == "sft" else recipe.rl_state(ctx, ctx.init_params)
