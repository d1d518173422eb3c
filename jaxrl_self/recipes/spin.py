"""SPIN — self-play fine-tuning (docs/algorithms.md#dpo-and-spin-losses).

Round t on a fixed pool of `method.num_problems` training problems (the SFT data's prompts): the
current model p_t generates `method.samples_per_prompt` completions y' per prompt; each forms a
pair (chosen = the task's worked solution y, rejected = y'); p_{t+1} is trained from p_t with the
DPO loss, p_t as the frozen reference and `lam = method.beta`:

    L = mean softplus(-(lam [log p(y|x) - log p_t(y|x)] - lam [log p(y'|x) - log p_t(y'|x)]))

Generations identical to the worked solution carry no gradient and are dropped (their fraction is
logged: SPIN stops improving as it approaches 1).

Held-out metric (`spin/heldout_margin`): on the evaluation prompts, the mean sequence log-prob
margin `log p(y|x) - log p(y'_0|x)` of the worked solution over a completion y'_0 sampled once
from the warm-started model — how far the model has moved from its starting distribution
towards the data's. Rows where y'_0 equals y are left out.
"""
from __future__ import annotations

import jax
import numpy as np

from jaxrl_self.config import ConfigError
from jaxrl_self.recipes.iterative import IterativeRecipe, generate, train_sampler
from jaxrl_self.train.dpo import encode_preference_pairs, make_pair_scorer


def self_play_pairs(ctx, examples, generated) -> tuple[list[str], list[str], list[str], int]:
    """(prompts, chosen, rejected, identical): one pair per generated completion that differs from
    its example's worked solution and fits the completion length; `identical` counts the others."""
    prompts, chosen, rejected, identical = [], [], [], 0
    for example, outs in zip(examples, generated):
        for text in outs:
            if text == example.solution:
                identical += 1
            elif ctx.fits(text) and ctx.fits(example.solution):
                prompts.append(example.prompt)
                chosen.append(example.solution)
                rejected.append(text)
    return prompts, chosen, rejected, identical


def spin_round(recipe: IterativeRecipe, ctx, iteration: int, params, base_params):
    """One SPIN round (module docstring). Returns (params, metrics)."""
    cfg = ctx.config.method
    problems = ctx.train_examples[: cfg.num_problems]
    generated = generate(ctx, train_sampler(ctx), params, [e.prompt for e in problems], jax.random.fold_in(ctx.root_key, iteration))
    prompts, chosen, rejected, identical = self_play_pairs(ctx, problems, generated)
    pairs = encode_preference_pairs(ctx.tokenizer, prompts, chosen, rejected, ctx.prompt_len, ctx.new_tokens)
    params, metrics = recipe.dpo_fine_tune(ctx, params, pairs, steps=cfg.train_steps, batch_size=cfg.train_batch_size,
                                    learning_rate=cfg.learning_rate, beta=cfg.beta, seed=ctx.config.seed + iteration)
    return params, {**metrics, "spin/pairs": len(prompts), "spin/identical_fraction": identical / (len(problems) * cfg.samples_per_prompt)}


class HeldOutMargin:
    """`spin/heldout_margin` (module docstring). The rejected completions are sampled once, on the
    first call, from the warm-started model (the state's reference) by the training sampler (the
    first of each prompt's samples), so a resumed run draws the same ones."""

    def __init__(self):
        self.pairs = None
        self.scorer = None

    def __call__(self, ctx, state) -> dict:
        if self.pairs is None:
            examples = ctx.test_examples
            key = jax.random.fold_in(ctx.root_key, 0)  # rounds use 1, 2, ...
            generated = generate(ctx, train_sampler(ctx), IterativeRecipe.base_params(state), [e.prompt for e in examples], key)
            prompts, chosen, rejected, _ = self_play_pairs(ctx, examples, [outs[:1] for outs in generated])
            self.pairs = encode_preference_pairs(ctx.tokenizer, prompts, chosen, rejected, ctx.prompt_len, ctx.new_tokens)
            self.scorer = make_pair_scorer(ctx.graphdef)
        if len(self.pairs["prompt_tokens"]) == 0:
            return {"spin/heldout_margin": 0.0, "spin/heldout_chosen_logp": 0.0}
        chosen, rejected = (np.asarray(x) for x in self.scorer(state.params, self.pairs))
        return {"spin/heldout_margin": float(np.mean(chosen - rejected)), "spin/heldout_chosen_logp": float(np.mean(chosen))}


def check_config(config) -> None:
    cfg = config.method
    for key in ("iterations", "num_problems", "samples_per_prompt", "train_batch_size", "batch_size"):
        if cfg[key] < 1:
            raise ConfigError(f"config.method.{key}: must be >= 1, got {cfg[key]}")
    if cfg.beta <= 0 or cfg.train_steps < 0:
        raise ConfigError(f"config.method.beta must be > 0 and config.method.train_steps >= 0, got {cfg.beta}, {cfg.train_steps}")


class SPIN(IterativeRecipe):
    """SPIN on the shared loop (module docstring)."""

    name = "spin"
    config_defaults = dict(
        iterations=2,
        num_problems=512,  # SFT prompts (with their worked solutions) used every iteration
        samples_per_prompt=1,  # self-generated (rejected) completions per prompt
        temperature=1.0,
        beta=0.1,  # lambda
        train_steps=60,  # DPO steps per iteration (from the previous iterate)
        train_batch_size=32,
        learning_rate=1e-4,
        batch_size=256,  # prompts per sampler call
    )

    def __init__(self, config):
        super().__init__(config)
        check_config(config)
        self.heldout_margin = HeldOutMargin()

    def round(self, ctx, iteration, params, base_params):
        return spin_round(self, ctx, iteration, params, base_params)

    def extra_eval(self, ctx, state):
        return self.heldout_margin(ctx, state)
