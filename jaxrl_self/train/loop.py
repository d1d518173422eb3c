"""The outer loop of the default job: SFT warm start, then RL with the task's verifier as reward.

`train_and_evaluate(config, workdir)` is the single entry point (as in the Flax examples). It
resumes from the latest checkpoint in `workdir`, logs through `metrics.py`, evaluates held-out
greedy accuracy after SFT and after RL, and writes a report. Global step numbering: SFT steps are
1..sft.steps, RL steps follow.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import config_to_json, validate_devices
from jaxrl_self.eval.evaluate import evaluate
from jaxrl_self.metrics import MetricsWriter, ProgressBar, write_report
from jaxrl_self.models.config import EXECUTION_FIELDS, ModelConfig
from jaxrl_self.models.pretrained import load_pretrained
from jaxrl_self.models.transformer import model_graphdef
from jaxrl_self.methods import LABEL_FREE, build_reward_method
from jaxrl_self.methods.test_time import make_vote_evaluator
from jaxrl_self.parallel import (
    initialize_distributed,
    is_main_process,
    make_mesh,
    process_rows,
    shard_batch,
    shard_state,
    sharding_for,
)
from jaxrl_self.rewards.host import encode_references
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.train.dynamic_sampling import collect_groups, make_group_merger
from jaxrl_self.train.faults import RunControl, StopSignal
from jaxrl_self.train.rl_step import make_batch_builder, make_reward_scorer, make_rl_update, needs_reference, refresh_reference
from jaxrl_self.train.sft import encode_prompts, make_sft_step, sft_batch
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer
from jaxrl_self.train.value_head import init_value_head
from jaxrl_self.train.workdir import claim_workdir, prepare_workdir

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"  # the last checkpoint.max_to_keep steps
BEST_CHECKPOINT_DIR = "best_checkpoint"  # the step with the best held-out accuracy


def model_config_from(config, vocab_size: int) -> ModelConfig:
    """The ModelConfig of a model trained from scratch, as `config.model` describes it."""
    m = config.model
    return with_execution_options(
        ModelConfig(vocab_size=vocab_size, hidden_size=m.hidden_size, num_layers=m.num_layers, num_heads=m.num_heads,
                    num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, intermediate_size=m.intermediate_size,
                    rope_theta=m.rope_theta, max_position_embeddings=m.max_position_embeddings, dtype=m.dtype), config)


def with_execution_options(model_config: ModelConfig, config) -> ModelConfig:
    """`model_config` (from scratch or a pretrained checkpoint) running as `config.model` says:
    remat, attention kernel, log-prob chunk, scanned layers (`models.config.EXECUTION_FIELDS`; a
    pretrained model's parameters are loaded in the layout `scan_layers` asks for)."""
    return dataclasses.replace(model_config, **{name: config.model[name] for name in EXECUTION_FIELDS})


def rl_optimizer(config):
    """The RL phase's optimizer as `config.rl` and `config.model.param_dtype` set it."""
    rl = config.rl
    return make_optimizer(rl.learning_rate, rl.steps * rl.epochs * rl.minibatches, rl.warmup_steps,
                          weight_decay=rl.weight_decay, max_grad_norm=rl.max_grad_norm,
                          moments_dtype=rl.moments_dtype, param_dtype=config.model.param_dtype)


class Run:
    """Everything built once per run from the config: task, model definition, jitted functions."""

    def __init__(self, config, workdir: Path):
        self.config, self.workdir = config, workdir
        initialize_distributed(config.distributed)
        self.mesh = make_mesh(config.mesh)
        if config.model.get("init_from"):  # a pretrained model (.gguf, HF or orbax dir) brings its own tokenizer
            model_config, _, self.init_params, tokenizer = load_pretrained(
                config.model.init_from, config.model.dtype, sharding_for=sharding_for(self.mesh),
                scan_layers=config.model.scan_layers)
            self.model_config = with_execution_options(model_config, config)
            self.graphdef = model_graphdef(self.model_config)
            self.task = build_task(config.task, tokenizer)
        else:
            self.task = build_task(config.task)
            self.model_config = model_config_from(config, self.task.tokenizer.vocab_size)
            self.graphdef, self.init_params = init_model(self.model_config, config.seed)
        self.tokenizer = self.task.tokenizer
        self.prompt_len, self.new_tokens = config.task.max_prompt_len, config.rl.max_new_tokens
        rl = config.rl
        self.param_dtype = config.model.param_dtype
        self.sft_optimizer = make_optimizer(config.sft.learning_rate, config.sft.steps, config.sft.warmup_steps,
                                            param_dtype=self.param_dtype)
        self.rl_optimizer = rl_optimizer(config)
        sampling = dict(max_new_tokens=self.new_tokens, eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id,
                        vocab_size=self.tokenizer.vocab_size)
        self.eval_sampler = make_sampler(self.graphdef, SamplingConfig(group_size=1, temperature=0.0, **sampling), self.mesh)
        self.rl_sampler = make_sampler(self.graphdef, SamplingConfig(group_size=rl.group_size, temperature=rl.temperature,
                                                                     top_k=rl.top_k, top_p=rl.top_p, **sampling), self.mesh)
        self.train_examples = self.task.examples("train")
        self.test_examples = self.task.examples("test")[: config.eval.num_examples]
        # label-free rewards sharpen the sampled answers: their runs report held-out pass@1 and maj@G
        self.evaluate_votes = make_vote_evaluator(
            self.graphdef, self.task, self.test_examples, prompt_len=self.prompt_len, max_new_tokens=self.new_tokens,
            group_size=rl.group_size, temperature=rl.temperature, batch_size=config.eval.batch_size,
            seed=config.seed) if config.method.test_time or rl.reward in LABEL_FREE else None
        self.root_key = jax.random.key(config.seed)

    @property
    def rl_examples(self):
        """The RL prompts: the training split, or with test-time training (config.method.test_time)
        the held-out prompts themselves, unlabeled."""
        return self.test_examples if self.config.method.test_time else self.train_examples

    def fresh_state(self, phase: str, params=None):
        """The phase's initial TrainState, sharded over `self.mesh` (also the target a checkpoint restores
        into); its params in `model.param_dtype`, with the optimizer's master weights starting from `params`."""
        params = self.init_params if params is None else params
        if phase == "sft":
            return shard_state(init_train_state(params, self.sft_optimizer, self.config.seed, with_reference=False,
                                                param_dtype=self.param_dtype), self.mesh)
        rl = self.config.rl
        value_params = init_value_head(self.model_config.hidden_size) if rl.algorithm == "ppo" else None
        return shard_state(init_train_state(params, self.rl_optimizer, self.config.seed, with_reference=needs_reference(rl),
                                            value_params=value_params, reference_dtype=self.model_config.compute_dtype,
                                            param_dtype=self.param_dtype), self.mesh)

    def evaluate(self, params) -> dict:
        """Greedy results on the held-out examples, the same on every process (each evaluates all of them)."""
        return evaluate(self.eval_sampler, params, self.task, self.test_examples, self.prompt_len, self.config.eval.batch_size)


def run_sft(run: Run, state, meta, control: RunControl, writer: MetricsWriter):
    """SFT steps `meta["sft_step"]+1 .. sft.steps`, the held-out eval, and the switch to the RL state.

    Returns the RL phase's fresh state (policy = SFT params) and meta, checkpointed at step sft.steps.
    """
    cfg = run.config
    # each process reads its own shard of the data; the global batch is sft.batch_size rows
    iterator = PromptIterator(len(run.train_examples), cfg.sft.batch_size // jax.process_count(), cfg.seed,
                              shard_index=jax.process_index(), shard_count=jax.process_count())
    if meta.get("iterator"):
        iterator.set_state(meta["iterator"])
    step_fn = make_sft_step(run.graphdef, run.sft_optimizer, run.mesh)
    start = int(meta.get("sft_step", 0))  # not state.step: that does not count skipped (non-finite) updates
    bar = ProgressBar(cfg.sft.steps, "SFT warm start", initial=start)
    for step in range(start + 1, cfg.sft.steps + 1):
        batch = sft_batch(run.tokenizer, [run.train_examples[i] for i in iterator.next()], run.prompt_len, run.new_tokens)
        state, metrics = step_fn(state, shard_batch(batch, run.mesh))
        counters = control.observe(step, metrics)
        if step % cfg.log_every == 0 or step == cfg.sft.steps:
            metrics = jax.device_get(metrics)
            writer.write(step, {"phase": 0, **metrics, **counters})
            bar.update(step - bar.count, loss=float(metrics["sft/loss"]))
        if step < cfg.sft.steps:  # the last SFT step is saved below, as the start of RL
            control.save(step, state, {**meta, "phase": "sft", "sft_step": step, "iterator": iterator.get_state()},
                         due=step % cfg.checkpoint.every == 0)
    bar.close()
    results = run.evaluate(state.params)
    log.info("held-out greedy accuracy after SFT: %.3f", results["accuracy"])
    writer.write(cfg.sft.steps, {"eval/accuracy": results["accuracy"], "eval/format_ok": results["format_ok"]})
    meta = {**meta, "phase": "rl", "iterator": None, "results": {**meta.get("results", {}), "sft_accuracy": results["accuracy"]}}
    state = run.fresh_state("rl", state.params)
    control.save(cfg.sft.steps, state, meta, due=True, accuracy=results["accuracy"])
    return state, meta


def rl_batch(run: Run, method, indices: np.ndarray):
    """Prompt arrays `[B', P]` and reference bytes `[B', W]` for the method's prompts."""
    examples = [run.rl_examples[i] for i in indices]
    prompts = method.prompts(examples)
    tokens, mask = encode_prompts(run.tokenizer, prompts, run.prompt_len)
    refs = encode_references(method.references(examples), run.config.task.max_reference_len)
    return tokens, mask, refs


def run_rl(run: Run, state, meta, control: RunControl, writer: MetricsWriter):
    """RL steps `meta["rl_step"]+1 .. rl.steps`: sample, score, update, log, evaluate, checkpoint.

    Each of the S processes draws its own rl.prompts_per_step/S prompts (its slice of the global
    batch; in process order, the prompts a one-process run draws), places them on the global mesh
    with the other processes' and samples them together; it then scores the completions of its own
    prompts on its host (`process_rows`: verifiers read only local rows) and the scored rows become
    the global training batch again. Reward metrics are averaged over processes: all log the same.
    Returns (state, meta, the held-out results of the last step's evaluation, or None when no step ran).
    """
    cfg, rl = run.config, run.config.rl
    processes = jax.process_count()
    iterator = PromptIterator(len(run.rl_examples), rl.prompts_per_step // processes, cfg.seed + 1,
                              shard_index=jax.process_index(), shard_count=processes)
    if meta.get("iterator"):
        iterator.set_state(meta["iterator"])
    method = build_reward_method(cfg, run.task, run.tokenizer)
    score_rewards = make_reward_scorer(rl, method)
    build_batch = make_batch_builder(run.graphdef, rl, method, run.mesh)
    update = make_rl_update(run.graphdef, run.rl_optimizer, rl, run.mesh)
    merge = make_group_merger(rl.group_size)
    g = rl.group_size
    # DAPO keeps sampling until every group has reward signal; others sample one round
    max_rounds = 1 + rl.max_resample_rounds if rl.algorithm == "dapo" else 1
    filter_groups = rl.algorithm == "dapo" or rl.filter_zero_advantage_groups
    base = cfg.sft.steps
    bar = ProgressBar(rl.steps, f"RL ({rl.algorithm})", initial=int(meta.get("rl_step", 0)))
    last_eval = None
    for rl_step in range(int(meta.get("rl_step", 0)) + 1, rl.steps + 1):
        step = base + rl_step
        started = time.perf_counter()
        key = jax.random.fold_in(run.root_key, step)

        def draw(round_index):
            """Samples G completions for each of the next B prompts; scores this process's rows."""
            tokens, mask, refs = rl_batch(run, method, iterator.next())
            prompt_tokens, prompt_mask = shard_batch((tokens, mask), run.mesh)
            samples = run.rl_sampler(state.params, prompt_tokens, prompt_mask, jax.random.fold_in(key, round_index))
            # rows b*G+g are prompt-major and both arrays are split by rows over the same mesh axes
            # (validate_devices: prompts_per_step divisible by them), so this process gets whole groups:
            # the G completions of each of its own prompts, in its prompts' order
            samples = process_rows(samples, run.mesh)
            batch = {"prompt_tokens": np.repeat(tokens, g, 0), "prompt_mask": np.repeat(mask, g, 0),
                     "completion_tokens": samples.tokens, "completion_mask": samples.mask,
                     "sampler_entropy": samples.entropy, "sampler_mean_logp_vocab": samples.mean_logp_vocab}
            rewards, reward_metrics = score_rewards(batch, np.repeat(refs, g, 0))
            reward_metrics = {**reward_metrics, "response_length/mean": jnp.mean(samples.lengths),
                              "truncated_fraction": jnp.mean(samples.truncated)}
            return (batch, rewards), rewards["reward"], reward_metrics

        (batch, rewards), group_valid, score_metrics = collect_groups(draw, merge, group_size=g, max_rounds=max_rounds,
                                                                      filter_groups=filter_groups)
        batch, rewards, group_valid = shard_batch((batch, rewards, group_valid), run.mesh)  # the global batch
        batch, batch_metrics = build_batch(state, batch, rewards, group_valid, key)
        state, update_metrics = update(state, control.inject_nan(step, batch), key)
        state = refresh_reference(state, rl, rl_step)
        metrics = {**score_metrics, **jax.device_get({**batch_metrics, **update_metrics})}
        metrics.update({
            "reward/mean": metrics.pop("reward/reward"), "accuracy/train": metrics.pop("reward/correct"),
            "sampler/compilations": run.rl_sampler.compilations(), "time/step_s": time.perf_counter() - started,
        })
        last_eval = None  # held-out results of the params this step leaves, when it evaluates
        if rl_step % cfg.eval.every == 0 or rl_step == rl.steps:
            last_eval = run.evaluate(state.params)
            metrics["eval/accuracy"] = last_eval["accuracy"]
        metrics.update(control.observe(step, metrics))
        writer.write(step, metrics)
        bar.update(1, reward=metrics["reward/mean"], acc=metrics["accuracy/train"])
        control.save(step, state, {**meta, "phase": "rl", "rl_step": rl_step, "iterator": iterator.get_state()},
                     due=rl_step % cfg.checkpoint.every == 0 or rl_step == rl.steps, accuracy=metrics.get("eval/accuracy"))
    bar.close()
    return state, meta, last_eval


def train_and_evaluate(config, workdir) -> dict:
    """Runs (or resumes) the job described by `config` in `workdir`; returns the summary dict.

    Resumes from the newest readable checkpoint in `<workdir>/checkpoints` (metrics.jsonl rows
    after its step are dropped and written again), so a run killed at any moment and started
    again produces the same parameters and metrics as one that was never interrupted. Raises
    `faults.Preempted` after SIGTERM/SIGINT and `faults.NonFiniteStop` after too many non-finite
    steps in a row, each once a checkpoint of the current step is on disk.
    """
    with StopSignal() as stop_signal:
        initialize_distributed(config.distributed)  # before anything touches the JAX backend
        validate_devices(config, jax.device_count(), jax.process_count())
        workdir = prepare_workdir(config, workdir)
        run = Run(config, workdir)
        claim_workdir(config, workdir)
        ckpt = Checkpointer(workdir / CHECKPOINT_DIR, config.checkpoint.max_to_keep)
        best = Checkpointer(workdir / BEST_CHECKPOINT_DIR, max_to_keep=1, best_metric="accuracy")
        try:
            restored = ckpt.restore_latest(lambda meta: run.fresh_state(meta["phase"]))
            if restored:
                step, state, meta = restored
                log.info("resuming from the checkpoint at step %d in %s", step, ckpt.directory)
            else:
                step, meta = 0, {"phase": "sft" if config.sft.steps > 0 else "rl", "results": {},
                                 "config": json.loads(config_to_json(config))}
                state = run.fresh_state(meta["phase"])
            control = RunControl(config.train, meta, ckpt, best, stop_signal)
            with MetricsWriter(workdir, resume_step=step, is_main_process=is_main_process()) as writer:
                if meta["phase"] == "sft":
                    state, meta = run_sft(run, state, meta, control, writer)
                if config.sft.steps == 0 and "sft_accuracy" not in meta["results"]:
                    meta["results"]["sft_accuracy"] = run.evaluate(state.params)["accuracy"]
                if run.evaluate_votes and "votes_before" not in meta["results"]:
                    meta["results"]["votes_before"] = run.evaluate_votes(state.params)
                state, meta, last_eval = run_rl(run, state, meta, control, writer)
            final = last_eval if last_eval is not None else run.evaluate(state.params)
            if run.evaluate_votes:
                final["votes_after"] = run.evaluate_votes(state.params)
        finally:
            ckpt.close()
            best.close()
    summary = {"held-out greedy accuracy": {"after SFT": meta["results"]["sft_accuracy"], "after RL": final["accuracy"]},
               "task": config.task.name, "algorithm": config.rl.algorithm, "held-out examples": len(run.test_examples)}
    if run.evaluate_votes:
        trained_on = "the held-out prompts (test-time training, unlabeled)" if config.method.test_time else "the training prompts"
        summary[f"held-out pass@1 / maj@{config.rl.group_size} at T={config.rl.temperature}, RL on {trained_on}"] = {
            "before": meta["results"]["votes_before"], "after": final["votes_after"]}
    if is_main_process():
        report = write_report(workdir, title=f"jaxrl_self run: {workdir.name}", summary=summary, samples=final["samples"])
        log.info("report written to %s", report)
    return summary
