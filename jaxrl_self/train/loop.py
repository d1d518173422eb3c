"""The outer loop of the default job: SFT warm start, then RL with the task's verifier as reward.

`train_and_evaluate(config, workdir)` is the single entry point (as in the Flax examples). It
resumes from the latest checkpoint in `workdir`, logs through `metrics.py`, evaluates held-out
greedy accuracy after SFT and after RL, and writes a report. Global step numbering: SFT steps are
1..sft.steps, RL steps follow.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.eval.evaluate import evaluate
from jaxrl_self.metrics import MetricsWriter, ProgressBar, write_report
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.methods import build_reward_method
from jaxrl_self.rewards.host import encode_references
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.train.rl_step import make_rl_update, make_scorer, needs_reference
from jaxrl_self.train.sft import encode_prompts, make_sft_step, sft_batch
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer
from jaxrl_self.train.workdir import prepare_workdir

log = logging.getLogger(__name__)


def model_config_from(config, vocab_size: int) -> ModelConfig:
    m = config.model
    return ModelConfig(vocab_size=vocab_size, hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
                       num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, intermediate_size=m.intermediate_size,
                       rope_theta=m.rope_theta, max_position_embeddings=m.max_position_embeddings, dtype=m.dtype)


class Run:
    """Everything built once per run from the config: task, model definition, jitted functions."""

    def __init__(self, config, workdir: Path):
        self.config, self.workdir = config, workdir
        self.task = build_task(config.task)
        self.tokenizer = self.task.tokenizer
        self.model_config = model_config_from(config, self.tokenizer.vocab_size)
        self.graphdef, self.init_params = init_model(self.model_config, config.seed)
        self.prompt_len, self.new_tokens = config.task.max_prompt_len, config.rl.max_new_tokens
        rl = config.rl
        self.sft_optimizer = make_optimizer(config.sft.learning_rate, config.sft.steps, config.sft.warmup_steps)
        self.rl_optimizer = make_optimizer(rl.learning_rate, rl.steps * rl.epochs * rl.minibatches, rl.warmup_steps)
        sampling = dict(max_new_tokens=self.new_tokens, eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id,
                        vocab_size=self.tokenizer.vocab_size)
        self.eval_sampler = make_sampler(self.graphdef, SamplingConfig(group_size=1, temperature=0.0, **sampling))
        self.rl_sampler = make_sampler(self.graphdef, SamplingConfig(group_size=rl.group_size, temperature=rl.temperature,
                                                                     top_k=rl.top_k, top_p=rl.top_p, **sampling))
        self.train_examples = self.task.examples("train")
        self.test_examples = self.task.examples("test")[: config.eval.num_examples]
        self.root_key = jax.random.key(config.seed)

    def fresh_state(self, phase: str, params=None):
        params = self.init_params if params is None else params
        if phase == "sft":
            return init_train_state(params, self.sft_optimizer, self.config.seed, with_reference=False)
        return init_train_state(params, self.rl_optimizer, self.config.seed, with_reference=needs_reference(self.config.rl))

    def evaluate(self, params) -> dict:
        return evaluate(self.eval_sampler, params, self.task, self.test_examples, self.prompt_len, self.config.eval.batch_size)


def run_sft(run: Run, state, meta, ckpt: Checkpointer, writer: MetricsWriter):
    cfg = run.config
    iterator = PromptIterator(len(run.train_examples), cfg.sft.batch_size, cfg.seed)
    if meta.get("iterator"):
        iterator.set_state(meta["iterator"])
    step_fn = make_sft_step(run.graphdef, run.sft_optimizer)
    bar = ProgressBar(cfg.sft.steps, "SFT warm start", initial=int(state.step))
    for step in range(int(state.step) + 1, cfg.sft.steps + 1):
        batch = sft_batch(run.tokenizer, [run.train_examples[i] for i in iterator.next()], run.prompt_len, run.new_tokens)
        state, metrics = step_fn(state, batch)
        if step % cfg.log_every == 0 or step == cfg.sft.steps:
            metrics = jax.device_get(metrics)
            writer.write(step, {"phase": 0, **metrics})
            bar.update(step - bar.count, loss=float(metrics["sft/loss"]))
        if step % cfg.checkpoint.every == 0 and step < cfg.sft.steps:
            ckpt.save(step, state, {**meta, "phase": "sft", "iterator": iterator.get_state()})
    bar.close()
    results = run.evaluate(state.params)
    log.info("held-out greedy accuracy after SFT: %.3f", results["accuracy"])
    writer.write(cfg.sft.steps, {"eval/accuracy": results["accuracy"], "eval/format_ok": results["format_ok"]})
    meta = {**meta, "phase": "rl", "iterator": None, "results": {**meta.get("results", {}), "sft_accuracy": results["accuracy"]}}
    state = run.fresh_state("rl", state.params)
    ckpt.save(cfg.sft.steps, state, meta)
    return state, meta


def rl_batch(run: Run, method, indices: np.ndarray):
    """Prompt arrays `[B', P]` and reference bytes `[B', W]` for the method's prompts."""
    examples = [run.train_examples[i] for i in indices]
    prompts = method.prompts(examples)
    tokens, mask = encode_prompts(run.tokenizer, prompts, run.prompt_len)
    refs = encode_references(method.references(examples), run.config.task.max_reference_len)
    return tokens, mask, refs


def run_rl(run: Run, state, meta, ckpt: Checkpointer, writer: MetricsWriter):
    cfg, rl = run.config, run.config.rl
    iterator = PromptIterator(len(run.train_examples), rl.prompts_per_step, cfg.seed + 1)
    if meta.get("iterator"):
        iterator.set_state(meta["iterator"])
    method = build_reward_method(cfg, run.task, run.tokenizer)
    score = make_scorer(run.graphdef, rl, method)
    update = make_rl_update(run.graphdef, run.rl_optimizer, rl)
    base = cfg.sft.steps
    bar = ProgressBar(rl.steps, f"RL ({rl.algorithm})", initial=int(meta.get("rl_step", 0)))
    for rl_step in range(int(meta.get("rl_step", 0)) + 1, rl.steps + 1):
        step = base + rl_step
        started = time.perf_counter()
        tokens, mask, refs = rl_batch(run, method, iterator.next())
        key = jax.random.fold_in(run.root_key, step)
        samples = run.rl_sampler(state.params, jnp.asarray(tokens), jnp.asarray(mask), key)
        g = rl.group_size
        batch = {"prompt_tokens": np.repeat(tokens, g, 0), "prompt_mask": np.repeat(mask, g, 0),
                 "completion_tokens": samples.tokens, "completion_mask": samples.mask,
                 "sampler_entropy": samples.entropy, "sampler_mean_logp_vocab": samples.mean_logp_vocab}
        batch, rewards, score_metrics = score(state, batch, np.repeat(refs, g, 0), key)
        state, update_metrics = update(state, batch, key)
        metrics = jax.device_get({**score_metrics, **update_metrics})
        metrics.update({
            "reward/mean": metrics.pop("reward/reward"), "accuracy/train": metrics.pop("reward/correct"),
            "response_length/mean": float(np.mean(np.asarray(samples.lengths))),
            "truncated_fraction": float(np.mean(np.asarray(samples.truncated))),
            "sampler/compilations": run.rl_sampler.compilations(), "time/step_s": time.perf_counter() - started,
        })
        if rl_step % cfg.eval.every == 0 or rl_step == rl.steps:
            metrics["eval/accuracy"] = run.evaluate(state.params)["accuracy"]
        writer.write(step, metrics)
        bar.update(1, reward=metrics["reward/mean"], acc=metrics["accuracy/train"])
        if rl_step % cfg.checkpoint.every == 0 or rl_step == rl.steps:
            ckpt.save(step, state, {**meta, "phase": "rl", "rl_step": rl_step, "iterator": iterator.get_state()})
    bar.close()
    return state, meta


def train_and_evaluate(config, workdir) -> dict:
    """Runs (or resumes) the job described by `config` in `workdir`; returns the summary dict."""
    workdir = prepare_workdir(config, workdir)
    run = Run(config, workdir)
    ckpt = Checkpointer(workdir / "checkpoints", config.checkpoint.max_to_keep)
    restored = ckpt.restore_latest(lambda meta: run.fresh_state(meta["phase"]))
    if restored:
        step, state, meta = restored
        log.info("resuming from the checkpoint at step %d in %s", step, ckpt.directory)
    else:
        step, meta = 0, {"phase": "sft" if config.sft.steps > 0 else "rl", "results": {}}
        state = run.fresh_state(meta["phase"])
    writer = MetricsWriter(workdir, resume_step=step)
    try:
        if meta["phase"] == "sft":
            state, meta = run_sft(run, state, meta, ckpt, writer)
        if config.sft.steps == 0 and "sft_accuracy" not in meta["results"]:
            meta["results"]["sft_accuracy"] = run.evaluate(state.params)["accuracy"]
        state, meta = run_rl(run, state, meta, ckpt, writer)
        final = run.evaluate(state.params)
    finally:
        ckpt.close()
        writer.close()
    summary = {"held-out greedy accuracy": {"after SFT": meta["results"]["sft_accuracy"], "after RL": final["accuracy"]},
               "task": config.task.name, "algorithm": config.rl.algorithm, "held-out examples": len(run.test_examples)}
    report = write_report(workdir, title=f"jaxrl_self run: {workdir.name}", summary=summary, samples=final["samples"])
    log.info("report written to %s", report)
    return summary
