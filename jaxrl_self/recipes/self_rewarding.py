"""Self-rewarding language models (docs/algorithms.md#self-rewarding): the policy judges its own samples and is
trained with DPO on (highest-scored, lowest-scored) pairs, iterated M_1 -> M_2 -> ...

The judge is the policy itself, asked with a judge prompt and answering with a score in text:

    judge prompt:  "<judge>" + task prompt + response     e.g. "<judge>347+285=<think>...</think><answer>632</answer>"
    judgement:     "Score: N", N in 0..method.max_score   e.g. "Score: 5"

`<judge>` and `Score:` are tokens appended after the task tokenizer's vocabulary
(`ExtendedTokenizer`), so a tiny procedural model can learn the format. A judgement may reason
first; its score is the integer after the last "Score:", which must end the text and lie in
[0, max_score]. Anything else is a parse failure: counted and discarded (`parse_score` -> None).

Where the judging ability comes from (the paper's EFT seed data): the SFT warm start mixes the
task's worked solutions with judged examples — a training prompt with either its own worked
solution or another problem's, scored `max_score` if the task's verifier accepts it and 0
otherwise. With imperfect demonstrations (`task.demo_error_rate`) the flawed worked solutions
are the hard negatives (the work matches the problem, the final answer does not). The verifier is
used only to label this seed set; after the warm start every reward comes from the model's own
judgements. The verifier-based `judge/agreement` metrics are monitoring only.

One round (fresh training prompts each round, `method.num_problems` of them, from the second half
of the training split, which the warm start does not use): sample `method.samples_per_prompt`
responses per prompt; judge each `method.judge_samples` times (greedy when 1) and average the
parsed scores; per prompt, pair the highest-scored response (chosen) with the lowest (rejected),
skipping ties and prompts with fewer than two judged responses; DPO from M_t with M_t as reference.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import jax
import numpy as np

from jaxrl_self.config import ConfigError
from jaxrl_self.models.tokenizer import ExtendedTokenizer
from jaxrl_self.recipes.iterative import IterativeRecipe, generate, train_sampler
from jaxrl_self.tasks.base import Example
from jaxrl_self.train.dpo import encode_preference_pairs

JUDGE_TOKEN, SCORE_TOKEN = "<judge>", "Score:"
_SCORE = re.compile(r"Score:\s*(\d+)\s*\Z")




def judge_prompt(prompt: str, response: str) -> str:
    """The judge prompt for `response` to the task prompt `prompt`."""
    return f"{JUDGE_TOKEN}{prompt}{response}"


def judgement_text(score: int) -> str:
    return f"{SCORE_TOKEN} {score}"


def parse_score(text: str, max_score: int) -> Optional[int]:
    """The score of a judgement (module docstring), or None when malformed."""
    match = _SCORE.search(text)
    if match is None:
        return None
    score = int(match.group(1))
    return score if score <= max_score else None


def preference_pairs(scores: Sequence[Sequence[Optional[float]]]) -> tuple[list[tuple[int, int, int]], dict]:
    """Per prompt b, the pair (b, chosen = first highest-scored response, rejected = first
    lowest-scored) over the responses with a score (None = discarded). Prompts with fewer than
    two scored responses, or whose scores all tie, give no pair. Returns (pairs, {"ties",
    "too_few"} counts of skipped prompts)."""
    pairs, ties, too_few = [], 0, 0
    for b, row in enumerate(scores):
        scored = [(s, i) for i, s in enumerate(row) if s is not None]
        if len(scored) < 2:
            too_few += 1
            continue
        best = max(scored, key=lambda x: (x[0], -x[1]))
        worst = min(scored, key=lambda x: (x[0], x[1]))
        if best[0] == worst[0]:
            ties += 1
            continue
        pairs.append((b, best[1], worst[1]))
    return pairs, {"ties": ties, "too_few": too_few}


def verifier_pair_metrics(pairs: Sequence[tuple[int, int, int]], correct: Sequence[bool], group: int) -> dict:
    """Evaluation only, never a reward: the verifier's view of the self-judged pairs.

    `correct[b * group + i]` is the verifier's label of response i to prompt b. Returns the fraction
    of pairs whose chosen response is correct (compare with the round's sample accuracy, the chance
    that a random response is), whose rejected response is, and whose chosen is correct while the
    rejected is not (all 0.0 without pairs).
    """
    if not pairs:
        return {"self_rewarding/chosen_correct": 0.0, "self_rewarding/rejected_correct": 0.0,
                "self_rewarding/pairs_verifier_ordered": 0.0}
    chosen = np.array([correct[b * group + i] for b, i, _ in pairs], bool)
    rejected = np.array([correct[b * group + j] for b, _, j in pairs], bool)
    return {"self_rewarding/chosen_correct": float(chosen.mean()), "self_rewarding/rejected_correct": float(rejected.mean()),
            "self_rewarding/pairs_verifier_ordered": float((chosen & ~rejected).mean())}


def judge_seed_examples(task, examples: Sequence[Example], max_score: int, seed: int) -> tuple[list[str], list[str]]:
    """(judge prompts, judgements) for the warm start: each example with its own worked solution or,
    with probability 1/2, the next example's; scored by the task's verifier (max_score or 0)."""
    rng = np.random.default_rng(seed)
    prompts, targets = [], []
    for i, example in enumerate(examples):
        response = examples[(i + 1) % len(examples)].solution if rng.random() < 0.5 else example.solution
        correct = task.score(response, example.reference)["correct"]
        prompts.append(judge_prompt(example.prompt, response))
        targets.append(judgement_text(max_score if correct else 0))
    return prompts, targets


class SelfRewarding(IterativeRecipe):
    """Self-rewarding on the shared loop: the warm start (policy + judge SFT), one round, and the
    held-out judge check (module docstring)."""

    name = "self_rewarding"
    config_defaults = dict(
        iterations=2,  # M1 -> M2 -> M3
        num_problems=256,  # fresh training prompts per iteration
        samples_per_prompt=4,
        temperature=0.7,
        judge_fraction=0.3,  # share of the warm start's examples that are judged seed examples
        judge_prompt_len=64,  # tokens of "<judge>" + prompt + response, incl. BOS
        judge_new_tokens=6,  # "Score: 5" + EOS is 4 tokens
        judge_samples=1,  # judgements per response (greedy when 1; else sampled and averaged)
        judge_temperature=0.7,
        max_score=5,
        beta=0.1,  # DPO's beta
        train_steps=10,  # DPO steps per iteration
        train_batch_size=32,
        learning_rate=1e-4,
        batch_size=256,  # prompts per sampler call
    )

    def __init__(self, config):
        super().__init__(config)
        check_config(config)
        self.cfg = config.method

    def extend_tokenizer(self, tokenizer):
        return ExtendedTokenizer(tokenizer, (JUDGE_TOKEN, SCORE_TOKEN))

    def setup(self, ctx):
        cfg = self.cfg
        temperature = cfg.judge_temperature if cfg.judge_samples > 1 else 0.0
        self.judge_sampler = ctx.sampler(cfg.judge_samples, temperature, max_new_tokens=cfg.judge_new_tokens)
        half = len(ctx.train_examples) // 2
        self.round_examples = lambda i: ctx.train_examples[half + (i - 1) * cfg.num_problems: half + i * cfg.num_problems]
        super().setup(ctx)

    def warm_start_pairs(self, ctx):
        """Task demonstrations mixed with `method.judge_fraction` judged seed examples."""
        sft, cfg = ctx.config.sft, self.cfg
        total = sft.steps * sft.batch_size
        n_judge = int(cfg.judge_fraction * total)
        task_examples = ctx.train_examples[: total - n_judge]
        judge_prompts, judgements = judge_seed_examples(ctx.task, ctx.train_examples[total - n_judge: total], cfg.max_score,
                                                        ctx.config.seed)
        return [e.prompt for e in task_examples] + judge_prompts, [e.solution for e in task_examples] + judgements, cfg.judge_prompt_len

    def judge(self, ctx, params, prompts: Sequence[str], responses: Sequence[str], key) -> tuple[list, int, int]:
        """(scores, malformed, too_long): the mean parsed score of each response (None when every
        judgement is malformed or the judge prompt does not fit `method.judge_prompt_len`), the
        number of malformed judgements, and the number of responses too long to judge."""
        texts = [judge_prompt(p, r) for p, r in zip(prompts, responses)]
        fits = [ctx.fits(t, self.cfg.judge_prompt_len) for t in texts]  # the +1 that `fits` counts for EOS stands for BOS here
        judged = iter(generate(ctx, self.judge_sampler, params, [t for t, ok in zip(texts, fits) if ok], key,
                                  prompt_len=self.cfg.judge_prompt_len) if any(fits) else [])
        scores, malformed = [], 0
        for ok in fits:
            parsed = [parse_score(j, self.cfg.max_score) for j in next(judged)] if ok else []
            malformed += sum(s is None for s in parsed)
            valid = [s for s in parsed if s is not None]
            scores.append(float(np.mean(valid)) if valid else None)
        return scores, malformed, fits.count(False)

    def round(self, ctx, iteration, params, base_params):
        """One round (module docstring). Returns (params, metrics)."""
        cfg, g = self.cfg, self.cfg.samples_per_prompt
        examples = self.round_examples(iteration)
        key = jax.random.fold_in(ctx.root_key, iteration)
        responses = generate(ctx, train_sampler(ctx), params, [e.prompt for e in examples], key)
        flat = [(e, r) for e, outs in zip(examples, responses) for r in outs]
        scores, malformed, too_long = self.judge(ctx, params, [e.prompt for e, _ in flat], [r for _, r in flat], jax.random.fold_in(key, 1))
        correct = [ctx.task.score(r, e.reference)["correct"] for e, r in flat]
        fits = [ctx.fits(r) for _, r in flat]
        grouped = [[s if ok else None for s, ok in zip(scores[b * g:(b + 1) * g], fits[b * g:(b + 1) * g])] for b in range(len(examples))]
        pairs, skipped = preference_pairs(grouped)
        chosen = [flat[b * g + i][1] for b, i, _ in pairs]
        rejected = [flat[b * g + j][1] for b, _, j in pairs]
        batch = encode_preference_pairs(ctx.tokenizer, [examples[b].prompt for b, _, _ in pairs], chosen, rejected, ctx.prompt_len, ctx.new_tokens)
        params, dpo_metrics = self.dpo_fine_tune(ctx, params, batch, steps=cfg.train_steps, batch_size=cfg.train_batch_size,
                                            learning_rate=cfg.learning_rate, beta=cfg.beta, seed=ctx.config.seed + iteration)
        judged = [(s, c) for s, c in zip(scores, correct) if s is not None]
        metrics = {
            "self_rewarding/sample_accuracy": float(np.mean(correct)),
            "self_rewarding/pairs": len(pairs), "self_rewarding/ties": skipped["ties"], "self_rewarding/too_few": skipped["too_few"],
            "judge/parse_failure_fraction": malformed / (len(flat) * cfg.judge_samples), "judge/too_long": too_long,
            "judge/agreement": float(np.mean([(s > cfg.max_score / 2) == bool(c) for s, c in judged])) if judged else 0.0,
            **verifier_pair_metrics(pairs, correct, g),
        }
        return params, {**metrics, **dpo_metrics}

    def extra_eval(self, ctx, state) -> dict:
        """`judge/heldout_agreement`: on the evaluation prompts, the judge's verdict (score above
        max_score / 2) on each worked solution and on the next prompt's, against the verifier;
        malformed judgements count as wrong."""
        examples = ctx.test_examples
        prompts, responses = [e.prompt for e in examples] * 2, [e.solution for e in examples] + [e.solution for e in examples[1:] + examples[:1]]
        key = jax.random.fold_in(ctx.root_key, 0)  # rounds use 1, 2, ...
        scores, malformed, _ = self.judge(ctx, state.params, prompts, responses, key)
        agree = [s is not None and (s > self.cfg.max_score / 2) == bool(ctx.task.score(r, e.reference)["correct"])
                 for s, r, e in zip(scores, responses, examples * 2)]
        return {"judge/heldout_agreement": float(np.mean(agree)), "judge/heldout_parse_failures": malformed}


def check_config(config) -> None:
    cfg = config.method
    for key in ("iterations", "num_problems", "train_batch_size", "batch_size", "judge_samples", "max_score", "judge_new_tokens"):
        if cfg[key] < 1:
            raise ConfigError(f"config.method.{key}: must be >= 1, got {cfg[key]}")
    if cfg.samples_per_prompt < 2:
        raise ConfigError(f"config.method.samples_per_prompt: pairs need >= 2 responses per prompt, got {cfg.samples_per_prompt}")
    if not 0.0 <= cfg.judge_fraction < 1.0 or cfg.beta <= 0:
        raise ConfigError("config.method.judge_fraction must be in [0, 1) and config.method.beta > 0")
    if cfg.judge_prompt_len + cfg.judge_new_tokens > config.model.max_position_embeddings:
        raise ConfigError(f"config.method.judge_prompt_len + judge_new_tokens exceeds model.max_position_embeddings "
                          f"({config.model.max_position_embeddings})")
