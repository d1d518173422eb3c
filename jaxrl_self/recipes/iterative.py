"""What the iterative offline recipes (STaR / ReST-EM, SPIN, self-rewarding) share on the outer loop.

A run is the loop's SFT warm start on the recipe's demonstrations (`warm_start_pairs`, by default
the task's worked solutions of the first `sft.steps * sft.batch_size` training examples), then
`config.method.iterations` rounds, each a training step of the loop: `round(ctx, iteration,
params, base_params) -> (params, metrics)`, the recipe's generate -> filter or score ->
fine-tune round, with a fresh optimizer per round. Held-out greedy accuracy (plus the recipe's own
held-out metrics, `extra_eval`) after the warm start and after every round.

Metric rows: the warm start's at step `sft.steps`, round i's at step `sft.steps + i`. The train
state between rounds holds the current params and, as its frozen reference, the warm-started
ones (`base_params`); it has no optimizer state (each round builds its own). So a run resumes
after its last completed round, and `jaxrl-self eval` / `sample` read its checkpoints.

The rounds train as the RL loop does: matrices stored in `model.param_dtype` (bfloat16: float32
master weights inside each round's optimizer, so a round's updates are not rounded away; between
rounds only the bfloat16 params are kept), and a LoRA model (`model.lora.rank`) trains only its
adapters, every round starting from the current ones, with the frozen base shared by all.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.models.lora import join_adapters, split_adapters
from jaxrl_self.tasks.encoding import encode_pairs
from jaxrl_self.train.context import RunContext, rl_optimizer_param_dtype
from jaxrl_self.train.dpo import make_dpo_step
from jaxrl_self.train.loop import Recipe
from jaxrl_self.train.sft import make_sft_step
from jaxrl_self.train.state import NO_UPDATES, init_train_state, make_optimizer


def shuffled_batches(n: int, batch_size: int, steps: int, seed: int) -> np.ndarray:
    """`[steps, batch_size]` indices into n items: consecutive shuffled epochs, cut into batches."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps * batch_size // n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[: steps * batch_size].reshape(steps, batch_size)


def generate(ctx: RunContext, sampler, params, prompts: Sequence[str], key, prompt_len: Optional[int] = None) -> list[list[str]]:
    """Completion texts `[len(prompts)][group]`, in batches of `method.batch_size` prompts."""
    return ctx.generate(sampler, params, prompts, key, ctx.config.method.batch_size, prompt_len)


def train_sampler(ctx: RunContext):
    """The rounds' sampler: `method.samples_per_prompt` completions per prompt at `method.temperature`."""
    method = ctx.config.method
    return ctx.sampler(method.samples_per_prompt, method.temperature)


class IterativeRecipe(Recipe):
    """The shared part of the iterative recipes (module docstring); a recipe defines `round`."""

    def num_steps(self, config) -> int:
        return config.method.iterations

    def eval_name(self, config, rl_step):
        return f"iteration {rl_step}"

    def setup(self, ctx):
        self._steps = {}  # (kind, steps, learning rate, beta) -> (jitted step, optimizer)
        self.warm_prompts, self.warm_targets, self.warm_prompt_len = self.warm_start_pairs(ctx)

    def warm_start_pairs(self, ctx) -> tuple[list[str], list[str], int]:
        """(prompts, targets, prompt length) the warm start fine-tunes on."""
        sft = ctx.config.sft
        examples = ctx.train_examples[: min(sft.steps * sft.batch_size, len(ctx.train_examples))]
        return [e.prompt for e in examples], [e.solution for e in examples], ctx.prompt_len

    def sft_pool_size(self, ctx):
        return len(self.warm_prompts)

    def sft_batch(self, ctx, indices, step):
        batch = encode_pairs(ctx.tokenizer, [self.warm_prompts[i] for i in indices], [self.warm_targets[i] for i in indices],
                             self.warm_prompt_len, ctx.new_tokens)
        return {k: np.asarray(v) for k, v in batch.items()}

    def rl_state(self, ctx, params):
        return ctx.rl_state(params, with_reference=True, optimizer=NO_UPDATES, reference_dtype=jnp.float32)

    def step(self, ctx, state, extra, rl_step, key, control):
        params, metrics = self.round(ctx, rl_step, state.params, self.base_params(state))
        return state.replace(params=params), extra, {"iteration": rl_step, **metrics}

    @staticmethod
    def base_params(state):
        """The warm-started params the state keeps as its reference (a LoRA model's reference holds
        its adapters: joined with the frozen base)."""
        return join_adapters(split_adapters(state.params)[1], state.ref_params)

    def round(self, ctx, iteration: int, params, base_params):
        """One round from `params` (the warm-started `base_params` kept apart): returns (params, metrics)."""
        raise NotImplementedError

    def extra_eval(self, ctx, state) -> dict:
        """The recipe's own held-out metrics of `state` (its reference holds the warm-started params)."""
        return {}

    def evaluate(self, ctx, state, full):
        return {**super().evaluate(ctx, state, full), **self.extra_eval(ctx, state)}

    def summary(self, ctx, results):
        config = ctx.config
        return {**super().summary(ctx, results), "method": config.method.loop, "task": config.task.name,
                "held-out examples": len(ctx.test_examples)}

    def _step_fn(self, ctx, kind: str, steps: int, learning_rate: float, beta: float = 0.0):
        key = (kind, steps, learning_rate, beta)
        if key not in self._steps:
            optimizer = make_optimizer(learning_rate, steps, param_dtype=rl_optimizer_param_dtype(ctx.config))
            step_fn = (make_sft_step(ctx.graphdef, optimizer, ctx.mesh) if kind == "sft"
                       else make_dpo_step(ctx.graphdef, optimizer, beta, ctx.mesh))
            self._steps[key] = step_fn, optimizer
        return self._steps[key]

    def fine_tune(self, ctx, params, prompts: Sequence[str], completions: Sequence[str], *, steps: int, batch_size: int,
                  learning_rate: float, seed: int):
        """SFT (token-mean NLL, fresh AdamW) from `params` on (prompt, completion) pairs.

        Returns (params, metrics): `sft/loss_first`, `sft/loss_last` (0 steps or no pairs: unchanged params, {}).
        """
        if steps == 0 or not prompts:
            return params, {}
        data = encode_pairs(ctx.tokenizer, prompts, completions, ctx.prompt_len, ctx.new_tokens)
        step_fn, optimizer = self._step_fn(ctx, "sft", steps, learning_rate)
        state = init_train_state(params, optimizer, seed, with_reference=False, param_dtype=ctx.param_dtype)
        state, history = _run_steps(ctx, step_fn, state, data, steps, batch_size, seed)
        return state.params, {"sft/loss_first": float(history["sft/loss"][0]), "sft/loss_last": float(history["sft/loss"][-1])}

    def dpo_fine_tune(self, ctx, params, pairs: dict, *, steps: int, batch_size: int, learning_rate: float, beta: float,
                      seed: int):
        """DPO from `params` with `params` as the frozen reference, on `pairs` from
        `train.dpo.encode_preference_pairs`. Returns (params, metrics): the first and last step's
        `dpo/*` metrics as `<name>_first` / `<name>_last` (no pairs: unchanged params, {})."""
        if steps == 0 or len(pairs["prompt_tokens"]) == 0:
            return params, {}
        step_fn, optimizer = self._step_fn(ctx, "dpo", steps, learning_rate, beta=beta)
        state = init_train_state(params, optimizer, seed, with_reference=True, param_dtype=ctx.param_dtype)
        state, history = _run_steps(ctx, step_fn, state, pairs, steps, batch_size, seed)
        metrics = {}
        for name, values in history.items():
            if name.startswith("dpo/"):
                metrics.update({f"{name}_first": float(values[0]), f"{name}_last": float(values[-1])})
        return state.params, metrics


def _run_steps(ctx: RunContext, step_fn, state, data: dict, steps: int, batch_size: int, seed: int):
    """`steps` updates on shuffled batches of `data` (arrays with a leading N axis); returns the
    final state and every step's metrics stacked (`{name: [steps]}` numpy)."""
    history = []
    for indices in shuffled_batches(len(next(iter(data.values()))), batch_size, steps, seed):
        state, metrics = step_fn(state, ctx.shard({k: np.asarray(v)[indices] for k, v in data.items()}))
        history.append(metrics)
    return state, {k: np.asarray(v) for k, v in jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *history)).items()}
