"""The outer loop shared by the iterative offline recipes (STaR / ReST-EM, SPIN, self-rewarding).

A run is: a warm start (SFT on the task's worked solutions, `config.sft`), then
`config.method.iterations` rounds of `iterate(ws, iteration, params, base_params) -> (params,
metrics)` — each recipe's generate -> filter or score -> fine-tune round — with held-out greedy
accuracy (plus the recipe's own held-out metrics) after the warm start and after every round.

Metric rows: the warm start's at step `sft.steps`, round i's at step `sft.steps + i`. The
parameters after each round are saved in `<workdir>/checkpoints` in the layout of the default
job's SFT phase, so `jaxrl-self eval` / `sample` read them. The loops do not resume: a workdir
that already holds checkpoints is refused.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import ConfigError
from jaxrl_self.eval.evaluate import evaluate, generate
from jaxrl_self.metrics import MetricsWriter, ProgressBar, write_report
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.train.dpo import make_dpo_step
from jaxrl_self.train.loop import CHECKPOINT_DIR, model_config_from
from jaxrl_self.train.sft import encode_pairs, make_sft_step
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer
from jaxrl_self.train.workdir import claim_workdir, prepare_workdir

log = logging.getLogger(__name__)


class Workspace:
    """Built once per run from the config: task, tokenizer, model definition, samplers.

    Like `train.loop.Run`, except that the tokenizer may extend the task's (`extend_tokenizer(task
    tokenizer)`: the self-rewarding judge appends tokens after the task's vocabulary, so task token
    ids are unchanged) and that `train_sampler` draws `method.samples_per_prompt` completions per
    prompt at `method.temperature`.
    """

    def __init__(self, config, extend_tokenizer: Optional[Callable] = None):
        self.config = config
        self.task = build_task(config.task)
        self.tokenizer = extend_tokenizer(self.task.tokenizer) if extend_tokenizer else self.task.tokenizer
        self.graphdef, self.init_params = init_model(model_config_from(config, self.tokenizer.vocab_size), config.seed)
        self.prompt_len, self.new_tokens = config.task.max_prompt_len, config.rl.max_new_tokens
        self.greedy_sampler = self.make_sampler(1, 0.0)
        self.train_sampler = self.make_sampler(config.method.samples_per_prompt, config.method.temperature)
        self.train_examples = self.task.examples("train")
        self.test_examples = self.task.examples("test")[: config.eval.num_examples]
        self.root_key = jax.random.key(config.seed)
        self._steps = {}  # (kind, steps, learning rate, ...) -> (jitted step, optimizer)

    def make_sampler(self, group_size: int, temperature: float, max_new_tokens: Optional[int] = None):
        tok, rl = self.tokenizer, self.config.rl
        return make_sampler(self.graphdef, SamplingConfig(
            max_new_tokens=max_new_tokens or self.new_tokens, eos_id=tok.eos_id, pad_id=tok.pad_id, group_size=group_size,
            temperature=temperature, top_k=rl.top_k, top_p=rl.top_p, vocab_size=tok.vocab_size))

    def generate(self, sampler, params, prompts: Sequence[str], key, prompt_len: Optional[int] = None) -> list[list[str]]:
        """Completion texts `[len(prompts)][group]`, in batches of `method.batch_size` prompts."""
        return generate(sampler, params, self.tokenizer, prompts, prompt_len or self.prompt_len, key, self.config.method.batch_size)

    def fits(self, text: str, length: Optional[int] = None) -> bool:
        """Whether `text` + EOS fits in `length` tokens (default: the completion length)."""
        return len(self.tokenizer.encode(text)) + 1 <= (length or self.new_tokens)

    def evaluate(self, params) -> dict:
        """Held-out greedy accuracy on the first `eval.num_examples` test examples."""
        results = evaluate(self.greedy_sampler, params, self.task, self.test_examples, self.prompt_len, self.config.eval.batch_size)
        return {"eval/accuracy": results["accuracy"], "eval/format_ok": results["format_ok"]}

    def sft_step(self, steps: int, learning_rate: float, warmup_steps: int = 0):
        key = ("sft", steps, learning_rate, warmup_steps)
        if key not in self._steps:
            optimizer = make_optimizer(learning_rate, steps, warmup_steps)
            self._steps[key] = make_sft_step(self.graphdef, optimizer), optimizer
        return self._steps[key]

    def dpo_step(self, steps: int, learning_rate: float, beta: float):
        key = ("dpo", steps, learning_rate, beta)
        if key not in self._steps:
            optimizer = make_optimizer(learning_rate, steps)
            self._steps[key] = make_dpo_step(self.graphdef, optimizer, beta), optimizer
        return self._steps[key]

    def checkpoint_state(self, params):
        """`params` in the default job's SFT-phase train state, the layout `eval.runs.load_run` restores."""
        sft = self.config.sft
        return init_train_state(params, make_optimizer(sft.learning_rate, sft.steps, sft.warmup_steps), self.config.seed,
                                with_reference=False)


def shuffled_batches(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """`[steps, batch_size]` indices into n items: consecutive shuffled epochs, cut into batches."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[: steps * batch_size].reshape(steps, batch_size)


def _run_steps(step_fn, state, data: dict, steps: int, batch_size: int, seed: int):
    """`steps` updates on shuffled batches of `data` (arrays with a leading N axis); returns the
    final state and every step's metrics stacked (`{name: [steps]}` numpy)."""
    history = []
    for indices in shuffled_batches(len(next(iter(data.values()))), batch_size, steps, seed):
        state, metrics = step_fn(state, {k: jnp.asarray(v[indices]) for k, v in data.items()})
        history.append(metrics)
    return state, {k: np.asarray(v) for k, v in jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *history)).items()}


def fine_tune(ws: Workspace, params, prompts: Sequence[str], completions: Sequence[str], *, steps: int, batch_size: int,
              learning_rate: float, seed: int, warmup_steps: int = 0, prompt_len: Optional[int] = None):
    """SFT (token-mean NLL, fresh AdamW) from `params` on (prompt, completion) pairs.

    Returns (params, metrics): `sft/loss_first`, `sft/loss_last` (0 steps or no pairs: unchanged params, {}).
    """
    if steps == 0 or not prompts:
        return params, {}
    data = encode_pairs(ws.tokenizer, prompts, completions, prompt_len or ws.prompt_len, ws.new_tokens)
    step_fn, optimizer = ws.sft_step(steps, learning_rate, warmup_steps)
    state = init_train_state(params, optimizer, seed, with_reference=False)
    state, history = _run_steps(step_fn, state, data, steps, batch_size, seed)
    return state.params, {"sft/loss_first": float(history["sft/loss"][0]), "sft/loss_last": float(history["sft/loss"][-1])}


def dpo_fine_tune(ws: Workspace, params, pairs: dict, *, steps: int, batch_size: int, learning_rate: float, beta: float, seed: int):
    """DPO from `params` with `params` as the frozen reference, on `pairs` from
    `train.dpo.encode_preference_pairs`. Returns (params, metrics): the first and last step's
    `dpo/*` metrics as `<name>_first` / `<name>_last` (no pairs: unchanged params, {})."""
    if steps == 0 or len(pairs["prompt_tokens"]) == 0:
        return params, {}
    step_fn, optimizer = ws.dpo_step(steps, learning_rate, beta)
    state = init_train_state(params, optimizer, seed, with_reference=True)
    state, history = _run_steps(step_fn, state, pairs, steps, batch_size, seed)
    metrics = {}
    for name, values in history.items():
        if name.startswith("dpo/"):
            metrics.update({f"{name}_first": float(values[0]), f"{name}_last": float(values[-1])})
    return state.params, metrics


def sft_warm_start(ws: Workspace):
    """`sft.steps` steps of SFT from the initial params on the task's worked solutions
    (`sft.steps * sft.batch_size` training examples, each seen once). Returns (params, metrics)."""
    sft = ws.config.sft
    examples = ws.train_examples[: min(sft.steps * sft.batch_size, len(ws.train_examples))]
    return fine_tune(ws, ws.init_params, [e.prompt for e in examples], [e.solution for e in examples], steps=sft.steps,
                     batch_size=sft.batch_size, learning_rate=sft.learning_rate, seed=ws.config.seed,
                     warmup_steps=sft.warmup_steps)


Iterate = Callable[[Workspace, int, object, object], tuple[object, dict]]


def run_iterations(config, workdir, ws: Workspace, iterate: Iterate, *, warm_start=sft_warm_start,
                   extra_eval: Optional[Callable[[Workspace, object], dict]] = None, base_params=None) -> dict:
    """Warm start (skipped when `base_params` is given), then `method.iterations` rounds of
    `iterate`; evaluates after each, logs, checkpoints, writes the report. Returns the summary:
    every evaluation metric after the warm start and after each round."""
    workdir = prepare_workdir(config, workdir)  # `ws` (model and data) is built by now
    claim_workdir(config, workdir)
    ckpt = Checkpointer(workdir / CHECKPOINT_DIR, config.checkpoint.max_to_keep)
    if ckpt.steps():
        ckpt.close()
        raise ConfigError(f"{workdir} already holds checkpoints of an iterative run ({config.method.loop}); these loops "
                          "do not resume: use a new --workdir")

    def evaluation(params):
        return {**ws.evaluate(params), **(extra_eval(ws, params) if extra_eval else {})}

    start = config.sft.steps
    try:
        with MetricsWriter(workdir, resume_step=0) as writer:
            started = time.perf_counter()
            if base_params is None:
                base_params, warm_metrics = warm_start(ws)
            else:
                warm_metrics = {}
            results = {"after SFT": evaluation(base_params)}
            writer.write(start, {"iteration": 0, **warm_metrics, **results["after SFT"], "time/iteration_s": time.perf_counter() - started})
            log.info("%s: after the SFT warm start %s", config.method.loop, results["after SFT"])
            params = base_params
            bar = ProgressBar(config.method.iterations, f"{config.method.loop} iterations")
            for iteration in range(1, config.method.iterations + 1):
                started = time.perf_counter()
                params, metrics = iterate(ws, iteration, params, base_params)
                results[f"iteration {iteration}"] = evaluation(params)
                metrics = {"iteration": iteration, **metrics, **results[f"iteration {iteration}"],
                           "time/iteration_s": time.perf_counter() - started}
                writer.write(start + iteration, metrics)
                log.info("%s iteration %d: %s", config.method.loop, iteration, metrics)
                ckpt.save(start + iteration, ws.checkpoint_state(params),
                          {"phase": "sft", "loop": config.method.loop, "iteration": iteration, "results": results})
                bar.update(1, acc=metrics["eval/accuracy"])
            bar.close()
    finally:
        ckpt.close()
    summary = {name: {when: values[name] for when, values in results.items()} for name in results["after SFT"]}
    summary.update({"method": config.method.loop, "task": config.task.name, "held-out examples": len(ws.test_examples)})
    report = write_report(workdir, title=f"jaxrl_self {config.method.loop} run: {workdir.name}", summary=summary)
    log.info("report written to %s", report)
    return summary
