"""SCoRe (docs/algorithms.md#score): two-attempt self-correction trained by on-policy RL with KL to a reference.

An episode: attempt 1 `y1 ~ pi(.|x)`; attempt 2 `y2 ~ pi(.|x, y1, <retry>)`, where `<retry>` is
a special token added to the task's char tokenizer (the compact self-correction instruction).
Both attempts are graded by the task's verifier (r1, r2 in {0, 1}).

  Stage I  (`method.stage1_steps`): reward r2 on attempt 2; attempt 1 gets no reward and a strong
           KL to the reference (`method.beta2`), so it stays near the base model while attempt 2
           learns to improve.
  Stage II (the remaining `rl.steps`): reward r1 on attempt 1 and the shaped
           `r2 + alpha * (r2 - r1)` on attempt 2, KL `method.beta1` on both.

Attempt-1 and attempt-2 completions are separate rows of one batch (prompts left-padded to one
length): per row a GRPO group advantage (over the G episodes of a prompt, per attempt) and a KL
coefficient; loss `seq_mean_token_mean(clipped surrogate + kl_coef * k3)`, one optimizer step per
rollout batch. The reference is the warm-started policy.

Warm start (`method.retry_demos`): SFT on the task's worked solutions for attempt 1 and, for
attempt 2 (`x + y1 + <retry> -> y2`), either
  "copy":       y2 = y1, the "repeat the first answer" behaviour of a base model, which RL must
                turn into correcting it; or
  "redo_wrong": y2 = y1 when the verifier accepts y1, else another demonstration of the same
                problem (drawn from the first `REDO_POOL` training examples; y1 again when the pool
                holds no other): a weak corrector that keeps right answers and retries wrong ones.
Metrics (train rollouts; held out as eval/...): accuracy at attempt 1 and 2, their difference, and
the share of problems going incorrect->correct and correct->incorrect; held out both greedy
(eval/...) and sampled at `rl.temperature` (eval/sampled/..., `method.eval_samples` episodes per
problem), where a task's errors are sampling errors that greedy decoding hides.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.algorithms.advantages import group_advantages
from jaxrl_self.config import ConfigError
from jaxrl_self.models.tokenizer import ExtendedTokenizer, pad_batch
from jaxrl_self.tasks.encoding import encode_pairs
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.train.loop import Recipe
from jaxrl_self.train.rl_step import make_reference_scorer, make_rl_update

RETRY = "<retry>"
RETRY_DEMOS = ("copy", "redo_wrong")
REDO_POOL = 8192  # training examples searched for another demonstration of a problem




def shaped_rewards(r1, r2, stage: int, alpha: float):
    """Rewards of attempt 1 and attempt 2 in `stage` (1 or 2).

    Stage I: (0, r2). Stage II: (r1, r2 + alpha * (r2 - r1)); with alpha = 10:
    (r1, r2) = (0, 1) -> 11, (1, 0) -> -10, (1, 1) -> 1, (0, 0) -> 0.
    r1, r2: `[...]` float {0, 1} -> two float32 arrays of that shape.
    """
    r1, r2 = jnp.asarray(r1, jnp.float32), jnp.asarray(r2, jnp.float32)
    if stage == 1:
        return jnp.zeros_like(r1), r2
    return r1, r2 + alpha * (r2 - r1)


def kl_coefficients(stage: int, beta1: float, beta2: float) -> tuple[float, float]:
    """KL-to-reference coefficients of (attempt 1, attempt 2): stage I (beta2, 0), stage II (beta1, beta1)."""
    return (beta2, 0.0) if stage == 1 else (beta1, beta1)


def stage_of(rl_step: int, stage1_steps: int) -> int:
    """Stage (1 or 2) of RL step `rl_step` (1-based): the first `stage1_steps` steps are stage I."""
    return 1 if rl_step <= stage1_steps else 2


def second_attempt_prompts(prompt_tokens, prompt_mask, completion_tokens, completion_mask, retry_id: int, eos_id: int,
                           length: int):
    """Prompts of attempt 2: prompt + attempt 1 (without its EOS) + RETRY, left-padded.

    prompt_* `[N, P]` (left-padded), completion_* `[N, T]` (right-padded) numpy arrays ->
    (tokens `[N, length] int32`, mask `[N, length] bool`); `length >= P + T + 1`.
    """
    rows = []
    for p, pm, c, cm in zip(prompt_tokens, prompt_mask, completion_tokens, completion_mask):
        answer = c[cm.astype(bool)]
        rows.append([*p[pm.astype(bool)], *answer[answer != eos_id], retry_id])
    return pad_batch(rows, length, 0)




def attempt_metrics(r1, r2, prefix: str = "") -> dict:
    """Accuracy at attempt 1 and 2, their difference and the incorrect->correct / correct->incorrect shares."""
    r1, r2 = np.asarray(r1, bool), np.asarray(r2, bool)
    return {f"{prefix}accuracy@t1": float(r1.mean()), f"{prefix}accuracy@t2": float(r2.mean()),
            f"{prefix}delta(t1,t2)": float(r2.mean() - r1.mean()),
            f"{prefix}incorrect_to_correct": float((~r1 & r2).mean()), f"{prefix}correct_to_incorrect": float((r1 & ~r2).mean())}




class SCoRe(Recipe):
    """SCoRe on the shared loop (module docstring).

    Every prompt is left-padded to `second_len = task.max_prompt_len + rl.max_new_tokens + 1`, so
    one group-1 sampler over `rl.prompts_per_step * rl.group_size` rows serves attempt 2 and
    both attempts of the held-out episodes, and a group-G sampler serves attempt 1.
    """

    name = "SCoRe"
    config_defaults = dict(
        stage1_steps=40,  # the first stage1_steps of rl.steps are stage I, the rest stage II
        alpha=10.0,  # shaped bonus alpha * (r2 - r1) on attempt 2 in stage II
        beta1=0.01,  # KL to the reference on both attempts in stage II
        beta2=0.1,  # KL to the reference on attempt 1 in stage I
        retry_demos="redo_wrong",  # attempt-2 warm start: "redo_wrong" or "copy"
        eval_samples=4,  # held-out episodes per problem at rl.temperature (eval/sampled/...)
    )

    def __init__(self, config):
        super().__init__(config)
        method = config.method
        if method.retry_demos not in RETRY_DEMOS:
            raise ConfigError(f"config.method.retry_demos: expected one of {RETRY_DEMOS}, got {method.retry_demos!r}")
        if method.eval_samples < 1:
            raise ConfigError(f"config.method.eval_samples: must be >= 1, got {method.eval_samples}")
        needed = config.task.max_prompt_len + 2 * config.rl.max_new_tokens + 1
        if needed > config.model.max_position_embeddings:
            raise ConfigError(f"config.model.max_position_embeddings: SCoRe's second attempt needs task.max_prompt_len + "
                              f"2 * rl.max_new_tokens + 1 = {needed} positions, got {config.model.max_position_embeddings}")

    def extend_tokenizer(self, tokenizer):
        return ExtendedTokenizer(tokenizer, (RETRY,))

    def setup(self, ctx):
        rl = ctx.config.rl
        self.retry_id = ctx.tokenizer.encode(RETRY)[0]
        self.second_len = ctx.prompt_len + ctx.new_tokens + 1
        self.rows = rl.prompts_per_step * rl.group_size
        self.group_sampler = ctx.sampler(rl.group_size, rl.temperature)
        self.single_sampler = ctx.sampler(1, rl.temperature)
        self.with_reference = make_reference_scorer(ctx.graphdef, rl, ctx.mesh)
        self.update = make_rl_update(ctx.graphdef, ctx.rl_optimizer, rl, ctx.mesh)
        self.demos_by_prompt: dict[str, list[str]] = {}
        if ctx.config.method.retry_demos == "redo_wrong":
            for example in ctx.train_examples[: min(REDO_POOL, len(ctx.train_examples))]:
                self.demos_by_prompt.setdefault(example.prompt, []).append(example.solution)

    def rl_state(self, ctx, params):
        return ctx.rl_state(params, with_reference=True)

    def initial_extra(self, ctx):
        return {"iterator": None}

    def eval_name(self, config, rl_step):
        stage1, total = config.method.stage1_steps, config.rl.steps
        return {stage1: "after stage I", total: "after stage II"}.get(rl_step)

    def encode(self, ctx, prompts):
        """BOS + prompt, left-padded to `second_len`."""
        return ctx.encode_prompts(prompts, self.second_len)

    def grade(self, ctx, samples, references) -> np.ndarray:
        """`[N]` float32 correctness of sampled completions against their reference strings."""
        tokens, mask = np.asarray(samples.tokens), np.asarray(samples.mask)
        return np.array([ctx.task.score(ctx.tokenizer.decode(t[m]), ref)["correct"]
                         for t, m, ref in zip(tokens, mask, references)], np.float32)

    def episode(self, ctx, params, prompt_tokens, prompt_mask, references, key, first_sampler, **knobs):
        """Both attempts for each prompt row of `first_sampler`'s group: returns rows of attempt 1
        (prompt, samples), of attempt 2 and the rewards r1, r2 `[N]`."""
        first = ctx.sample(first_sampler, params, prompt_tokens, prompt_mask, jax.random.fold_in(key, 1), **knobs)
        group = first.tokens.shape[0] // prompt_tokens.shape[0]
        prompt_tokens, prompt_mask = np.repeat(prompt_tokens, group, 0), np.repeat(prompt_mask, group, 0)
        references = [r for r in references for _ in range(group)]
        second_tokens, second_mask = second_attempt_prompts(prompt_tokens, prompt_mask, np.asarray(first.tokens), np.asarray(first.mask),
                                                            self.retry_id, ctx.tokenizer.eos_id, self.second_len)
        second = ctx.sample(self.single_sampler, params, second_tokens, second_mask, jax.random.fold_in(key, 2), **knobs)
        return ((prompt_tokens, prompt_mask, first), (second_tokens, second_mask, second),
                self.grade(ctx, first, references), self.grade(ctx, second, references))

    def evaluate(self, ctx, state, full):
        """Two-attempt metrics on the held-out examples: greedy (eval/...) and over
        `method.eval_samples` episodes at `rl.temperature` (eval/sampled/...)."""
        greedy = self._held_out_rewards(ctx, state.params, ctx.root_key, temperature=0.0)
        sampled = [self._held_out_rewards(ctx, state.params, jax.random.fold_in(ctx.root_key, draw + 1))
                   for draw in range(ctx.config.method.eval_samples)]
        return {**attempt_metrics(*greedy, prefix="eval/"),
                **attempt_metrics(*(np.concatenate(r) for r in zip(*sampled)), prefix="eval/sampled/")}

    def _held_out_rewards(self, ctx, params, key, **knobs):
        """(r1, r2) `[num held-out examples]` of one episode per held-out example, in chunks of the
        single sampler's batch."""
        r1, r2 = [], []
        for start in range(0, len(ctx.test_examples), self.rows):
            examples = ctx.test_examples[start : start + self.rows]
            examples = examples + [examples[-1]] * (self.rows - len(examples))
            tokens, mask = self.encode(ctx, [e.prompt for e in examples])
            *_, a, b = self.episode(ctx, params, tokens, mask, [e.reference for e in examples], jax.random.fold_in(key, start),
                                    self.single_sampler, **knobs)
            r1.append(a)
            r2.append(b)
        count = len(ctx.test_examples)
        return np.concatenate(r1)[:count], np.concatenate(r2)[:count]

    def sft_batch(self, ctx, indices, step):
        """Half attempt-1 demonstrations (x -> y), half attempt-2 ones (x + y + RETRY -> `retry_target`)."""
        rng = np.random.default_rng([ctx.config.seed, 3, step])
        examples = [ctx.train_examples[i] for i in indices]
        half = len(examples) // 2
        prompts = [e.prompt for e in examples[:half]] + [e.prompt + e.solution + RETRY for e in examples[half:]]
        targets = [e.solution for e in examples[:half]] + [self.retry_target(ctx, e, rng) for e in examples[half:]]
        batch = encode_pairs(ctx.tokenizer, prompts, targets, self.second_len, ctx.new_tokens)
        return {k: np.asarray(v) for k, v in batch.items()}

    def retry_target(self, ctx, example, rng: np.random.Generator) -> str:
        """Attempt 2's demonstration after `example.solution` as attempt 1 (`method.retry_demos`)."""
        if ctx.config.method.retry_demos == "copy" or ctx.task.score(example.solution, example.reference)["correct"]:
            return example.solution
        others = [d for d in self.demos_by_prompt.get(example.prompt, ()) if d != example.solution]
        return others[int(rng.integers(len(others)))] if others else example.solution

    def step(self, ctx, state, extra, rl_step, key, control):
        """One SCoRe RL step on the next `rl.prompts_per_step` training prompts."""
        config, method, rl = ctx.config, ctx.config.method, ctx.config.rl
        iterator = ctx.prompt_iterator(len(ctx.train_examples), rl.prompts_per_step, extra["iterator"])
        examples = [ctx.train_examples[i] for i in iterator.next()]
        tokens, mask = self.encode(ctx, [e.prompt for e in examples])
        (p1, m1, first), (p2, m2, second), r1, r2 = self.episode(ctx, state.params, tokens, mask, [e.reference for e in examples],
                                                                 key, self.group_sampler)
        stage = stage_of(rl_step, method.stage1_steps)
        reward1, reward2 = shaped_rewards(r1, r2, stage, method.alpha)
        advantage = lambda r: group_advantages(r.reshape(-1, rl.group_size), std_ddof=rl.std_ddof, eps=rl.advantage_eps).reshape(-1)
        kl1, kl2 = kl_coefficients(stage, method.beta1, method.beta2)
        n = len(r1)
        batch = ctx.shard(RolloutBatch(
            prompt_tokens=np.concatenate([p1, p2]), prompt_mask=np.concatenate([m1, m2]),
            completion_tokens=np.concatenate([np.asarray(first.tokens), np.asarray(second.tokens)]),
            completion_mask=np.concatenate([np.asarray(first.mask), np.asarray(second.mask)]),
            advantages=np.concatenate([np.asarray(advantage(reward1)), np.asarray(advantage(reward2))]),
            kl_coef=np.concatenate([np.full((n,), kl1, np.float32), np.full((n,), kl2, np.float32)]),
        ))
        state, update_metrics = self.update(state, control.inject_nan(config.sft.steps + rl_step, self.with_reference(state, batch)), key)
        metrics = {"stage": stage, "reward/attempt1": float(jnp.mean(reward1)), "reward/attempt2": float(jnp.mean(reward2)),
                   **attempt_metrics(r1, r2), **jax.device_get(update_metrics)}
        return state, {"iterator": iterator.get_state()}, metrics

    def progress(self, metrics):
        return {"acc@t2": metrics["accuracy@t2"]}
