"""STaR and ReST-EM (docs/algorithms.md#star-and-rest-em): sample -> keep verified-correct -> fine-tune, iterated.

One round on a fixed pool of `method.num_problems` training problems:

1. E-step: sample `method.samples_per_prompt` completions per problem from the current model;
   keep the distinct ones the task's verifier marks correct, at most `method.max_per_problem`
   per problem (so easy problems do not dominate).
2. STaR rationalization (`method.rationalize`): for problems with nothing kept, sample again with
   the gold answer given as a hint (`method.hint_template`, e.g. "<answer>632</answer>347+285=");
   completions that reach the gold answer are kept, stored under the original prompt WITHOUT
   the hint.
3. M-step: SFT on the kept set from the base model (the SFT warm start) — not from the previous
   iterate — for `method.train_steps * method.steps_growth ** (round - 1)` steps (STaR: 1.2,
   growing; ReST-EM: 1.0).

`configs/star.py` (1 sample per problem, rationalization, growing steps) and `configs/rest_em.py`
(8 samples, cap 4, fixed steps) are the two settings of this one loop.
"""
from __future__ import annotations

from typing import Sequence

import jax

from jaxrl_self.config import ConfigError
from jaxrl_self.recipes.iterative import IterativeRecipe, generate, train_sampler
from jaxrl_self.tasks.base import Example


def keep_verified(task, examples: Sequence[Example], completions: Sequence[Sequence[str]], max_per_problem: int,
                  fits=lambda text: True) -> list[list[str]]:
    """Per example, its distinct verified-correct completions that `fits`, first `max_per_problem` in sampled order."""
    kept = []
    for example, outs in zip(examples, completions):
        good = [c for c in dict.fromkeys(outs) if fits(c) and task.score(c, example.reference)["correct"]]
        kept.append(good[:max_per_problem])
    return kept


def hint_prompt(template: str, example: Example) -> str:
    """The rationalization prompt: `template` with {prompt} and {reference} (the gold answer) filled in."""
    return template.format(prompt=example.prompt, reference=example.reference)


def self_training_round(recipe: IterativeRecipe, ctx, iteration: int, params, base_params):
    """One E-step + M-step (module docstring). Returns (params, metrics)."""
    cfg = ctx.config.method
    problems = ctx.train_examples[: cfg.num_problems]
    key = jax.random.fold_in(ctx.root_key, iteration)
    completions = generate(ctx, train_sampler(ctx), params, [e.prompt for e in problems], key)
    kept = keep_verified(ctx.task, problems, completions, cfg.max_per_problem, ctx.fits)
    sample_accuracy = sum(ctx.task.score(c, e.reference)["correct"] for e, outs in zip(problems, completions) for c in outs)
    metrics = {"self_training/sample_accuracy": sample_accuracy / (len(problems) * cfg.samples_per_prompt),
               "self_training/solved_fraction": sum(bool(k) for k in kept) / len(problems)}
    if cfg.rationalize:
        failed = [i for i, k in enumerate(kept) if not k]
        hinted = generate(ctx, train_sampler(ctx), params, [hint_prompt(cfg.hint_template, problems[i]) for i in failed],
                             jax.random.fold_in(key, 1), prompt_len=cfg.hint_prompt_len)
        rationalized = keep_verified(ctx.task, [problems[i] for i in failed], hinted, cfg.max_per_problem, ctx.fits)
        for i, rationales in zip(failed, rationalized):
            kept[i] = rationales  # stored under the original prompt: the hint is not part of the training pair
        metrics["self_training/rationalized_fraction"] = sum(bool(r) for r in rationalized) / len(problems)
    prompts = [problems[i].prompt for i, outs in enumerate(kept) for _ in outs]
    targets = [c for outs in kept for c in outs]
    steps = round(cfg.train_steps * cfg.steps_growth ** (iteration - 1))
    params, sft_metrics = recipe.fine_tune(ctx, base_params, prompts, targets, steps=steps, batch_size=cfg.train_batch_size,
                                    learning_rate=cfg.learning_rate, seed=ctx.config.seed + iteration)
    return params, {**metrics, **sft_metrics, "self_training/kept": len(targets), "self_training/train_steps": steps}


def check_config(config) -> None:
    cfg = config.method
    for key in ("iterations", "num_problems", "samples_per_prompt", "max_per_problem", "train_batch_size", "batch_size"):
        if cfg[key] < 1:
            raise ConfigError(f"config.method.{key}: must be >= 1, got {cfg[key]}")
    if cfg.train_steps < 0 or cfg.steps_growth < 1.0:
        raise ConfigError("config.method.train_steps must be >= 0 and config.method.steps_growth >= 1.0")
    if cfg.rationalize and not all(field in cfg.hint_template for field in ("{prompt}", "{reference}")):
        raise ConfigError(f"config.method.hint_template must contain {{prompt}} and {{reference}}, got {cfg.hint_template!r}")


class SelfTraining(IterativeRecipe):
    """STaR / ReST-EM on the shared loop (module docstring)."""

    config_defaults = dict(  # STaR's; configs/rest_em.py sets ReST-EM's
        iterations=3,
        num_problems=1024,  # the fixed pool of training problems
        samples_per_prompt=1,  # one rationale per problem
        temperature=1.0,
        max_per_problem=1,  # distinct verified-correct completions kept per problem
        rationalize=True,  # retry a failed problem with the gold answer as a hint
        hint_template="<answer>{reference}</answer>{prompt}",
        hint_prompt_len=24,
        train_steps=100,  # M-step SFT steps of the first iteration (from the base model every iteration) ...
        steps_growth=1.2,  # ... growing by this factor per iteration
        train_batch_size=64,
        learning_rate=1e-3,
        batch_size=256,  # prompts per sampler call
    )

    def __init__(self, config):
        self.name = config.method.loop
        super().__init__(config)
        check_config(config)

    def round(self, ctx, iteration, params, base_params):
        return self_training_round(self, ctx, iteration, params, base_params)
