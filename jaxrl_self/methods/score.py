"""SCoRe (ALGORITHMS.md 3.9): two-attempt self-correction trained by on-policy RL with KL to a reference.

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

import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrl_self.algorithms.advantages import group_advantages
from jaxrl_self.algorithms.aggregation import aggregate, masked_mean
from jaxrl_self.algorithms.kl import kl_penalty
from jaxrl_self.algorithms.losses import clipped_surrogate
from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import ConfigError
from jaxrl_self.metrics import MetricsWriter, write_report
from jaxrl_self.models.tokenizer import CharTokenizer, pad_batch
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.tasks.iterator import PromptIterator
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.train.loop import model_config_from
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.sft import encode_pairs, make_sft_step
from jaxrl_self.train.state import apply_gradients, init_model, init_train_state, make_optimizer
from jaxrl_self.train.workdir import claim_workdir, prepare_workdir

log = logging.getLogger(__name__)

RETRY = "<retry>"
CHECKPOINT_DIR = "checkpoints"
RETRY_DEMOS = ("copy", "redo_wrong")
REDO_POOL = 8192  # training examples searched for another demonstration of a problem


def retry_tokenizer(base: CharTokenizer) -> CharTokenizer:
    """`base` with the extra special token RETRY (same alphabet and specials, ids shifted after them)."""
    specials = base.special_tokens[3:]  # after pad, bos, eos
    alphabet = "".join(base.vocab[len(base.special_tokens):])
    return CharTokenizer(alphabet, (*specials, RETRY))


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


def score_loss(model, batch, rl):
    """SCoRe loss of one batch of attempt rows and its metrics.

    batch: prompt_tokens/prompt_mask `[N, P]`, completion_tokens/completion_mask `[N, T]`,
    advantages `[N]`, kl_coef `[N]`, ref_logp `[N, T]` (constant), attempt `[N]` (1 or 2).
    Loss: `seq_mean_token_mean(clipped surrogate + kl_coef * k3(logp, ref_logp))`.
    """
    mask = batch["completion_mask"].astype(jnp.float32)
    logp, entropy = completion_logprobs(model, batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"],
                                        batch["completion_mask"], rl.temperature, with_entropy=True)
    surrogate, _ = clipped_surrogate(logp, jax.lax.stop_gradient(logp), batch["advantages"], eps_low=rl.eps_low,
                                     eps_high=rl.eps_high, mask=mask)
    kl = kl_penalty(logp, batch["ref_logp"], "k3")
    loss = aggregate(surrogate + batch["kl_coef"][:, None] * kl, mask, "seq_mean_token_mean")
    first = (batch["attempt"] == 1)[:, None]
    metrics = {"loss": loss, "policy_loss": aggregate(surrogate, mask, "seq_mean_token_mean"),
               "entropy": masked_mean(entropy, mask),
               "kl/attempt1": masked_mean(kl, mask * first), "kl/attempt2": masked_mean(kl, mask * ~first)}
    return loss, metrics


def make_score_update(graphdef, optimizer, rl):
    """Jitted `update(state, batch) -> (state, metrics)`: reference log-probs under `state.ref_params`,
    then one optimizer step on `score_loss`."""

    @jax.jit
    def update(state, batch):
        args = (batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], batch["completion_mask"], rl.temperature)
        ref_logp = jax.lax.stop_gradient(completion_logprobs(nnx.merge(graphdef, state.ref_params), *args)[0])
        loss_fn = lambda params: score_loss(nnx.merge(graphdef, params), {**batch, "ref_logp": ref_logp}, rl)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        state, update_metrics = apply_gradients(state, grads, optimizer, loss)
        return state, {**metrics, **update_metrics}

    return update


def attempt_metrics(r1, r2, prefix: str = "") -> dict:
    """Accuracy at attempt 1 and 2, their difference and the incorrect->correct / correct->incorrect shares."""
    r1, r2 = np.asarray(r1, bool), np.asarray(r2, bool)
    return {f"{prefix}accuracy@t1": float(r1.mean()), f"{prefix}accuracy@t2": float(r2.mean()),
            f"{prefix}delta(t1,t2)": float(r2.mean() - r1.mean()),
            f"{prefix}incorrect_to_correct": float((~r1 & r2).mean()), f"{prefix}correct_to_incorrect": float((r1 & ~r2).mean())}


class SelfCorrection:
    """Built once per run: task, tokenizer with RETRY, model definition, samplers, jitted steps.

    Every prompt is left-padded to `second_len = task.max_prompt_len + rl.max_new_tokens + 1`, so
    one group-1 sampler over `rl.prompts_per_step * rl.group_size` rows serves attempt 2 and
    both attempts of the held-out episodes, and a group-G sampler serves attempt 1.
    """

    def __init__(self, config):
        if config.method.retry_demos not in RETRY_DEMOS:
            raise ConfigError(f"config.method.retry_demos: expected one of {RETRY_DEMOS}, got {config.method.retry_demos!r}")
        if config.method.eval_samples < 1:
            raise ConfigError(f"config.method.eval_samples: must be >= 1, got {config.method.eval_samples}")
        self.config, rl = config, config.rl
        self.task = build_task(config.task)
        self.tokenizer = retry_tokenizer(self.task.tokenizer)
        self.retry_id = self.tokenizer.token_to_id[RETRY]
        self.graphdef, self.init_params = init_model(model_config_from(config, self.tokenizer.vocab_size), config.seed)
        self.first_len, self.new_tokens = config.task.max_prompt_len, rl.max_new_tokens
        self.second_len = self.first_len + self.new_tokens + 1
        if self.second_len + self.new_tokens > config.model.max_position_embeddings:
            raise ConfigError(f"config.model.max_position_embeddings: SCoRe's second attempt needs task.max_prompt_len + "
                              f"2 * rl.max_new_tokens + 1 = {self.second_len + self.new_tokens} positions, got "
                              f"{config.model.max_position_embeddings}")
        self.rows = rl.prompts_per_step * rl.group_size
        sampling = dict(max_new_tokens=self.new_tokens, eos_id=self.tokenizer.eos_id, pad_id=self.tokenizer.pad_id,
                        vocab_size=self.tokenizer.vocab_size, temperature=rl.temperature, top_k=rl.top_k, top_p=rl.top_p)
        self.group_sampler = make_sampler(self.graphdef, SamplingConfig(group_size=rl.group_size, **sampling))
        self.single_sampler = make_sampler(self.graphdef, SamplingConfig(group_size=1, **sampling))
        self.sft_optimizer = make_optimizer(config.sft.learning_rate, config.sft.steps, config.sft.warmup_steps)
        self.rl_optimizer = make_optimizer(rl.learning_rate, rl.steps, rl.warmup_steps, weight_decay=rl.weight_decay,
                                           max_grad_norm=rl.max_grad_norm)
        self.update = make_score_update(self.graphdef, self.rl_optimizer, rl)
        self.train_examples = self.task.examples("train")
        self.test_examples = self.task.examples("test")[: config.eval.num_examples]
        self.root_key = jax.random.key(config.seed)
        self.demos_by_prompt: dict[str, list[str]] = {}
        if config.method.retry_demos == "redo_wrong":
            for i in range(min(REDO_POOL, len(self.train_examples))):
                example = self.train_examples[i]
                self.demos_by_prompt.setdefault(example.prompt, []).append(example.solution)

    def rl_state(self, params=None):
        params = self.init_params if params is None else params
        return init_train_state(params, self.rl_optimizer, self.config.seed, with_reference=True)

    def encode(self, prompts):
        """BOS + prompt, left-padded to `second_len`."""
        return pad_batch([[self.tokenizer.bos_id, *self.tokenizer.encode(p)] for p in prompts], self.second_len, self.tokenizer.pad_id)

    def grade(self, samples, references) -> np.ndarray:
        """`[N]` float32 correctness of sampled completions against their reference strings."""
        tokens, mask = np.asarray(samples.tokens), np.asarray(samples.mask)
        return np.array([self.task.score(self.tokenizer.decode(t[m]), ref)["correct"]
                         for t, m, ref in zip(tokens, mask, references)], np.float32)

    def episode(self, params, prompt_tokens, prompt_mask, references, key, first_sampler, **knobs):
        """Both attempts for each prompt row of `first_sampler`'s group: returns rows of attempt 1
        (prompt, samples), of attempt 2 and the rewards r1, r2 `[N]`."""
        first = first_sampler(params, jnp.asarray(prompt_tokens), jnp.asarray(prompt_mask), jax.random.fold_in(key, 1), **knobs)
        group = first.tokens.shape[0] // prompt_tokens.shape[0]
        prompt_tokens, prompt_mask = np.repeat(prompt_tokens, group, 0), np.repeat(prompt_mask, group, 0)
        references = [r for r in references for _ in range(group)]
        second_tokens, second_mask = second_attempt_prompts(prompt_tokens, prompt_mask, np.asarray(first.tokens), np.asarray(first.mask),
                                                            self.retry_id, self.tokenizer.eos_id, self.second_len)
        second = self.single_sampler(params, jnp.asarray(second_tokens), jnp.asarray(second_mask), jax.random.fold_in(key, 2), **knobs)
        return ((prompt_tokens, prompt_mask, first), (second_tokens, second_mask, second),
                self.grade(first, references), self.grade(second, references))

    def evaluate(self, params) -> dict:
        """Two-attempt metrics on the held-out examples: greedy (eval/...) and over
        `method.eval_samples` episodes at `rl.temperature` (eval/sampled/...)."""
        greedy = self._held_out_rewards(params, self.root_key, temperature=0.0)
        sampled = [self._held_out_rewards(params, jax.random.fold_in(self.root_key, draw + 1))
                   for draw in range(self.config.method.eval_samples)]
        return {**attempt_metrics(*greedy, prefix="eval/"),
                **attempt_metrics(*(np.concatenate(r) for r in zip(*sampled)), prefix="eval/sampled/")}

    def _held_out_rewards(self, params, key, **knobs):
        """(r1, r2) `[num held-out examples]` of one episode per held-out example, in chunks of the
        single sampler's batch."""
        r1, r2 = [], []
        for start in range(0, len(self.test_examples), self.rows):
            examples = self.test_examples[start : start + self.rows]
            examples = examples + [examples[-1]] * (self.rows - len(examples))
            tokens, mask = self.encode([e.prompt for e in examples])
            *_, a, b = self.episode(params, tokens, mask, [e.reference for e in examples], jax.random.fold_in(key, start),
                                    self.single_sampler, **knobs)
            r1.append(a)
            r2.append(b)
        count = len(self.test_examples)
        return np.concatenate(r1)[:count], np.concatenate(r2)[:count]

    def sft_batch(self, indices, rng: np.random.Generator):
        """Half attempt-1 demonstrations (x -> y), half attempt-2 ones (x + y + RETRY -> `retry_target`)."""
        examples = [self.train_examples[i] for i in indices]
        half = len(examples) // 2
        prompts = [e.prompt for e in examples[:half]] + [e.prompt + e.solution + RETRY for e in examples[half:]]
        targets = [e.solution for e in examples[:half]] + [self.retry_target(e, rng) for e in examples[half:]]
        batch = encode_pairs(self.tokenizer, prompts, targets, self.second_len, self.new_tokens)
        return {k: np.asarray(v) for k, v in batch.items()}

    def retry_target(self, example, rng: np.random.Generator) -> str:
        """Attempt 2's demonstration after `example.solution` as attempt 1 (`method.retry_demos`)."""
        if self.config.method.retry_demos == "copy" or self.task.score(example.solution, example.reference)["correct"]:
            return example.solution
        others = [d for d in self.demos_by_prompt.get(example.prompt, ()) if d != example.solution]
        return others[int(rng.integers(len(others)))] if others else example.solution


def score_step(sc: SelfCorrection, state, indices, rl_step: int, step: int):
    """One SCoRe RL step on the prompts `indices`; returns (state, metrics)."""
    config, method = sc.config, sc.config.method
    examples = [sc.train_examples[i] for i in indices]
    tokens, mask = sc.encode([e.prompt for e in examples])
    key = jax.random.fold_in(sc.root_key, step)
    (p1, m1, first), (p2, m2, second), r1, r2 = sc.episode(state.params, tokens, mask, [e.reference for e in examples], key,
                                                           sc.group_sampler)
    stage = stage_of(rl_step, method.stage1_steps)
    reward1, reward2 = shaped_rewards(r1, r2, stage, method.alpha)
    rl = config.rl
    advantage = lambda r: group_advantages(r.reshape(-1, rl.group_size), std_ddof=rl.std_ddof, eps=rl.advantage_eps).reshape(-1)
    kl1, kl2 = kl_coefficients(stage, method.beta1, method.beta2)
    n = len(r1)
    batch = {
        "prompt_tokens": np.concatenate([p1, p2]), "prompt_mask": np.concatenate([m1, m2]),
        "completion_tokens": jnp.concatenate([first.tokens, second.tokens]),
        "completion_mask": jnp.concatenate([first.mask, second.mask]),
        "advantages": jnp.concatenate([advantage(reward1), advantage(reward2)]),
        "kl_coef": jnp.concatenate([jnp.full((n,), kl1), jnp.full((n,), kl2)]),
        "attempt": np.repeat(np.array([1, 2], np.int32), n),
    }
    state, update_metrics = sc.update(state, batch)
    metrics = {"stage": stage, "reward/attempt1": float(jnp.mean(reward1)), "reward/attempt2": float(jnp.mean(reward2)),
               **attempt_metrics(r1, r2)}
    return state, {**metrics, **jax.device_get(update_metrics)}


def warm_start(sc: SelfCorrection, writer: MetricsWriter):
    """`sft.steps` of SFT on attempt-1 solutions and attempt-2 demonstrations; returns the params."""
    config = sc.config
    state = init_train_state(sc.init_params, sc.sft_optimizer, config.seed, with_reference=False)
    step_fn = make_sft_step(sc.graphdef, sc.sft_optimizer)
    iterator = PromptIterator(len(sc.train_examples), config.sft.batch_size, config.seed)
    rng = np.random.default_rng([config.seed, 3])
    for step in range(1, config.sft.steps + 1):
        state, metrics = step_fn(state, sc.sft_batch(iterator.next(), rng))
        if step % config.log_every == 0 or step == config.sft.steps:
            writer.write(step, {"phase": 0, **jax.device_get(metrics)})
    return state.params


def run_method(config, workdir) -> dict:
    """Runs (or resumes) SCoRe in `workdir`: warm start, stage I, stage II; returns
    {metric: {"after SFT", "after stage I", "after stage II"}} of the held-out metrics (greedy and sampled).

    Resumes from the newest checkpoint (train state with the reference, RL step, prompt iterator);
    a run stopped during the warm start repeats it.
    """
    workdir = prepare_workdir(config, Path(workdir))
    sc = SelfCorrection(config)
    claim_workdir(config, workdir)
    method, base = config.method, config.sft.steps
    total = config.rl.steps
    ckpt = Checkpointer(workdir / CHECKPOINT_DIR, config.checkpoint.max_to_keep)
    try:
        restored = ckpt.restore_latest(lambda meta: sc.rl_state())
        with MetricsWriter(workdir, resume_step=restored[0] if restored else 0) as writer:
            if restored:
                _, state, meta = restored
                log.info("resuming SCoRe at RL step %d", meta["rl_step"])
            else:
                state = sc.rl_state(warm_start(sc, writer))
                meta = {"phase": "rl", "rl_step": 0, "iterator": None, "results": {"after SFT": sc.evaluate(state.params)}}
                writer.write(base, meta["results"]["after SFT"])
                ckpt.save(base, state, meta)
            iterator = PromptIterator(len(sc.train_examples), config.rl.prompts_per_step, config.seed + 1)
            if meta["iterator"]:
                iterator.set_state(meta["iterator"])
            for rl_step in range(meta["rl_step"] + 1, total + 1):
                started = time.perf_counter()
                state, metrics = score_step(sc, state, iterator.next(), rl_step, base + rl_step)
                metrics["time/step_s"] = time.perf_counter() - started
                meta = {**meta, "rl_step": rl_step, "iterator": iterator.get_state()}
                if rl_step in (method.stage1_steps, total):
                    name = "after stage I" if rl_step == method.stage1_steps else "after stage II"
                    meta["results"] = {**meta["results"], name: sc.evaluate(state.params)}
                    metrics.update(meta["results"][name])
                writer.write(base + rl_step, metrics)
                if rl_step % config.checkpoint.every == 0 or rl_step in (method.stage1_steps, total):
                    ckpt.save(base + rl_step, state, meta)
    finally:
        ckpt.close()
    results = meta["results"]
    summary = {name: {when: values[name] for when, values in results.items()} for name in results["after SFT"]}
    write_report(workdir, title=f"SCoRe run: {workdir.name}", summary=summary)
    return summary
