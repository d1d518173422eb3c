"""Absolute Zero (docs/algorithms.md#absolute-zero-rewards-and-trr): one policy proposes tasks and solves them, paid by a code executor.

One self-play step:
  1. propose: for each task kind (deduction, abduction, induction) the policy writes B new tasks,
     each prompted with a reference task from that kind's buffer; the sandbox validates them
     (`absolute_zero_tasks.validate_proposals`: a one-argument lambda, no forbidden names, runs,
     deterministic) and computes their outputs;
  2. solve: B solver tasks per kind (the valid new proposals first, the rest drawn from the
     buffer), G = `rl.group_size` answers each, graded by exact value equality after execution;
  3. rewards: solver `1 / -0.5 / -1` (correct / wrong / format error); proposer learnability
     `1 - s` of its task's solve rate s over the G answers (0 when s is 0 or 1) for a valid task,
     -0.5 for a well-formed invalid one, -1 on a format error;
  4. TRR++ advantages, normalised within each of the 6 (role, kind) classes of the batch
     (`algorithms.advantages.task_relative_advantages`), and one update of the shared RL learner
     (`train.rl_step.make_rl_update`, REINFORCE-style clipped surrogate, `rl.algorithm` sets the
     loss aggregation);
  5. valid proposals join their kind's buffer (seeded with the identity program).

The policy is a tiny char-level model (`absolute_zero_tasks.make_tokenizer`), warm-started by a
short SFT on synthetic valid programs and solved synthetic tasks, or a pretrained model
(`config.model.init_from`, with its own tokenizer; `configs/absolute_zero_smollm2.py`). With
`method.few_shot = K > 0` every prompt starts with K worked examples of its role and kind, one per
line, drawn once from synthetic tasks whose prompts are not held out; a completion then ends at
a line end (the newline tokens are stop tokens), as the examples do. Metrics before and after RL:
the proposer's valid-task rate on fixed reference prompts (sampled at `rl.temperature`) and the
solver's greedy and sampled accuracy on a fixed held-out set of synthetic tasks. The per-step
`propose/*` and `solve/*` metrics are on the moving buffer (references and tasks drawn from the
model's own proposals, whose difficulty changes as it learns), so they are not held-out measures.

Checkpoints (`<workdir>/checkpoints`) hold the RL train state; their meta holds the RL step, the
task buffers and the pre-RL evaluation, so a resumed run continues with the same buffers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.algorithms.advantages import task_relative_advantages
from jaxrl_self.config import ConfigError
from jaxrl_self.recipes import absolute_zero_tasks as azt
from jaxrl_self.rewards.code_sandbox import SandboxLimits, mechanism
from jaxrl_self.rewards.learnability import format_aware_reward, learnability_reward
from jaxrl_self.tasks.encoding import encode_pairs
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.train.loop import AFTER_SFT, Recipe
from jaxrl_self.train.rl_step import make_rl_update


class AbsoluteZero(Recipe):
    """Absolute Zero self-play on the shared loop (module docstring)."""

    name = "Absolute Zero"
    config_defaults = dict(
        proposals_per_kind=8,  # B: proposer prompts (and solver tasks) per task kind per step
        buffer_size=256,  # valid tasks kept per kind (oldest dropped)
        sandbox_timeout_s=10.0,  # wall-clock limit of one sandboxed batch of executions
        eval_tasks_per_kind=32,  # fixed held-out synthetic tasks for the solver's greedy and sampled accuracy
        few_shot=0,  # worked examples per prompt, one per line (needs a pretrained tokenizer)
    )

    def __init__(self, config):
        super().__init__(config)
        rl = config.rl
        rows = 3 * config.method.proposals_per_kind * (1 + rl.group_size)
        if rows % (rl.minibatches * rl.micro_batches):
            raise ConfigError(f"config.rl.micro_batches: a self-play batch has 3*proposals_per_kind*(1+group_size) = {rows} "
                              f"rows, not divisible by rl.minibatches*rl.micro_batches = {rl.minibatches}*{rl.micro_batches}")

    def scratch_tokenizer(self, config):
        return azt.make_tokenizer()

    def setup(self, ctx):
        self.ctx, config, method, rl = ctx, ctx.config, ctx.config.method, ctx.config.rl
        self.config, self.tokenizer = config, ctx.tokenizer
        self.per_kind, self.group = method.proposals_per_kind, rl.group_size
        self.limits = SandboxLimits(timeout_s=method.sandbox_timeout_s)
        stop_ids = line_end_ids(self.tokenizer) if method.few_shot else ()
        self.single_sampler = ctx.sampler(1, rl.temperature, stop_ids=stop_ids)  # proposer, eval
        self.group_sampler = ctx.sampler(self.group, rl.temperature, stop_ids=stop_ids)  # solver
        self.update = make_rl_update(ctx.graphdef, ctx.rl_optimizer, rl, ctx.mesh)
        eval_rng = np.random.default_rng([config.seed, 7])
        self.eval_tasks = [azt.random_task(kind, eval_rng) for kind in azt.KINDS for _ in range(method.eval_tasks_per_kind)]
        self.eval_references = [azt.random_task(kind, eval_rng) for kind in azt.KINDS for _ in range(method.eval_tasks_per_kind)]
        # the warm start never shows these prompts, so the held-out measures are held out
        self.held_out_prompts = ({self._marked_solver_prompt(t) for t in self.eval_tasks}
                                 | {azt.proposer_prompt(t) for t in self.eval_references})
        self.prefix = self._worked_examples(method.few_shot, np.random.default_rng([config.seed, 9]))
        self.eval_key = jax.random.fold_in(ctx.root_key, 2**31)  # apart from every step key

    def proposer_prompt(self, reference: azt.Task) -> str:
        return self.prefix["propose", reference.kind] + azt.proposer_prompt(reference)

    def solver_prompt(self, task: azt.Task) -> str:
        return self.prefix["solve", task.kind] + self._marked_solver_prompt(task)

    def _marked_solver_prompt(self, task: azt.Task) -> str:
        """`azt.solver_prompt`, ending with the answer's marker in few-shot mode (azt's docstring)."""
        return azt.solver_prompt(task) + (azt.ANSWER_MARKERS[task.kind] if self.config.method.few_shot else "")

    def _worked_examples(self, k: int, rng) -> dict:
        """{(role, kind): k worked examples, each a prompt and its completion on a line of its own}
        (empty strings when k is 0). Drawn from synthetic tasks whose prompts are not held out."""
        prefix = {}
        for kind in azt.KINDS:
            proposals = [self._training_prompt(kind, rng, azt.proposer_prompt)[1] + azt.proposal_completion(azt.random_task(kind, rng))
                         for _ in range(k)]
            solutions = [prompt + azt.solver_answer(task)
                         for task, prompt in (self._training_prompt(kind, rng, self._marked_solver_prompt) for _ in range(k))]
            prefix["propose", kind] = "".join(line + "\n" for line in proposals)
            prefix["solve", kind] = "".join(line + "\n" for line in solutions)
        return prefix

    def _sample(self, sampler, params, prompts, key, **knobs):
        """Completions of `prompts`: (prompt tokens `[B, P]`, mask, Samples, texts `[B*G]`). A text
        ends at its first line end (the stop token of few-shot prompts)."""
        tokens, mask = self.ctx.encode_prompts(prompts)
        samples = self.ctx.sample(sampler, params, tokens, mask, key, **knobs)
        completion, completion_mask = np.asarray(samples.tokens), np.asarray(samples.mask)
        texts = [self.tokenizer.decode(row[m]).split("\n", 1)[0] for row, m in zip(completion, completion_mask)]
        return tokens, mask, samples, texts

    def propose(self, params, references, rng, key):
        """Proposals for the reference tasks `[3B]`: rows, texts, statuses (azt.OK / INVALID / FORMAT_ERROR)
        and the validated task of each (None unless OK)."""
        tokens, mask, samples, texts = self._sample(self.single_sampler, params, [self.proposer_prompt(r) for r in references], key)
        parsed = [azt.parse_proposal(r.kind, text) for r, text in zip(references, texts)]
        candidates = [(p[0], (p[1],) if r.kind != "ind" else azt.induction_inputs(rng)) if p else None
                      for r, p in zip(references, parsed)]
        checked = iter(azt.validate_proposals([c for c in candidates if c], self.limits))
        statuses, tasks = [], []
        for reference, candidate in zip(references, candidates):
            status, outputs = next(checked) if candidate else (azt.FORMAT_ERROR, ())
            statuses.append(status)
            tasks.append(azt.Task(reference.kind, candidate[0], candidate[1], outputs) if status == azt.OK else None)
        return (tokens, mask, samples), texts, statuses, tasks

    def solve(self, params, tasks, key, greedy=False):
        """Graded answers, G per task (one greedy answer when `greedy`): rows, texts and grades
        ("correct" / "wrong" / FORMAT_ERROR) `[len(tasks) * G]`."""
        prompts = [self.solver_prompt(t) for t in tasks]
        if greedy:
            tokens, mask, samples, texts = self._sample(self.single_sampler, params, prompts, key, temperature=0.0)
        else:
            tokens, mask, samples, texts = self._sample(self.group_sampler, params, prompts, key)
        repeat = len(texts) // len(tasks)
        grades = azt.grade_answers([t for t in tasks for _ in range(repeat)], texts, self.limits)
        return (tokens, mask, samples), texts, grades

    def evaluate(self, ctx, state, full):
        return self.evaluate_play(state.params, self.eval_key)

    def evaluate_play(self, params, key) -> dict:
        """Proposer valid rate on fixed reference prompts (sampled) and, on fixed held-out tasks
        (`method.eval_tasks_per_kind` synthetic tasks of each kind, never the buffer), the solver's
        greedy accuracy and its sampled accuracy (mean over G answers at `rl.temperature`, the
        quantity RL optimises; less noisy than greedy on a small model)."""
        rng = np.random.default_rng([self.config.seed, 8])
        chunk, statuses, grades, sampled = 3 * self.per_kind, [], [], []
        for start in range(0, len(self.eval_tasks), chunk):  # batches of the proposer's shape: no new compilation
            references = self.eval_references[start : start + chunk]
            statuses += self.propose(params, references + [references[-1]] * (chunk - len(references)), rng, key)[2][: len(references)]
            tasks = self.eval_tasks[start : start + chunk]
            padded = tasks + [tasks[-1]] * (chunk - len(tasks))
            grades += self.solve(params, padded, key, greedy=True)[2][: len(tasks)]
            sampled += self.solve(params, padded, jax.random.fold_in(key, start + 1))[2][: len(tasks) * self.group]
        results = {"eval/valid_rate": float(np.mean([s == azt.OK for s in statuses]))}
        kinds = np.array([t.kind for t in self.eval_tasks])
        for name, graded, repeat in (("solver_accuracy", grades, 1), ("solver_sampled_accuracy", sampled, self.group)):
            correct = np.array([g == "correct" for g in graded]).reshape(-1, repeat).mean(1)
            results[f"eval/{name}"] = float(correct.mean())
            results.update({f"eval/{name}/{kind}": float(correct[kinds == kind].mean()) for kind in azt.KINDS})
        return results

    def sft_pool_size(self, ctx):
        return 1  # the demonstrations are synthetic, drawn anew for each step

    def sft_batch(self, ctx, indices, step):
        """A warm-start batch: half proposer demonstrations (reference task -> another valid task), half
        solver demonstrations (synthetic task -> its answer), kinds drawn uniformly."""
        rng = np.random.default_rng([self.config.seed, 1_000_000 + step])
        prompts, completions = [], []
        for _ in range(self.config.sft.batch_size):
            kind = azt.KINDS[int(rng.integers(3))]
            if rng.random() < 0.5:
                prompts.append(self.prefix["propose", kind] + self._training_prompt(kind, rng, azt.proposer_prompt)[1])
                completions.append(azt.proposal_completion(azt.random_task(kind, rng)))
            else:
                task, prompt = self._training_prompt(kind, rng, self._marked_solver_prompt)
                prompts.append(self.prefix["solve", kind] + prompt)
                completions.append(azt.solver_answer(task))
        batch = encode_pairs(self.tokenizer, prompts, completions, ctx.prompt_len, ctx.new_tokens)
        return {k: np.asarray(v) for k, v in batch.items()}


    def _training_prompt(self, kind, rng, prompt_of):
        """A random task of `kind` and `prompt_of(task)`, redrawn until the prompt is not held out."""
        while (prompt := prompt_of(task := azt.random_task(kind, rng))) in self.held_out_prompts:
            pass
        return task, prompt


    def rl_state(self, ctx, params):
        return ctx.rl_state(params, with_reference=False)

    def initial_extra(self, ctx):
        return {"buffers": azt.TaskBuffer(ctx.config.method.buffer_size).to_json()}

    def step(self, ctx, state, extra, rl_step, key, control):
        buffer = azt.TaskBuffer.from_json(extra["buffers"])
        state, metrics = self_play_step(self, state, buffer, ctx.config.sft.steps + rl_step, key)
        return state, {"buffers": buffer.to_json()}, metrics

    def progress(self, metrics):
        return {"valid": metrics["propose/valid_rate"], "solve": metrics["solve/accuracy"]}

    def summary(self, ctx, results):
        before, after = results[AFTER_SFT], results["after RL"]
        return {name: {"before RL": before[name], "after RL": after[name]} for name in after}


def line_end_ids(tokenizer) -> tuple:
    """Ids of "\n" and "\n\n" where each is one token: the stop tokens of few-shot prompts."""
    try:
        encoded = [tokenizer.encode(text) for text in ("\n", "\n\n")]
    except ValueError:  # the char-level tokenizer has no newline
        raise ConfigError("config.method.few_shot: worked examples are one per line and the char-level tokenizer has no "
                          "newline; set config.model.init_from to a pretrained model, or method.few_shot = 0") from None
    ids = tuple(ids[0] for ids in encoded if len(ids) == 1)
    if not ids:
        raise ConfigError("config.method.few_shot: this tokenizer has no single newline token to stop completions at")
    return ids


def trr_class_ids(per_kind: int, group: int) -> np.ndarray:
    """TRR++ class `role * 3 + kind` of every row of a self-play batch: `[3B + 3B*G] int32`.

    Rows are the 3B proposals (B per kind, kinds in `azt.KINDS` order; classes 0-2), then the G
    answers of each of the 3B solver tasks (classes 3-5).
    """
    kinds = np.arange(len(azt.KINDS), dtype=np.int32)
    return np.concatenate([np.repeat(kinds, per_kind), len(azt.KINDS) + np.repeat(kinds, per_kind * group)])


def self_play_step(play: AbsoluteZero, state, buffer: azt.TaskBuffer, step: int, key):
    """One propose -> validate -> solve -> reward -> TRR++ -> update step; adds valid proposals to `buffer`.

    Returns (state, metrics).
    """
    config, b = play.config, play.per_kind
    rng = np.random.default_rng([config.seed, step])
    references = [task for kind in azt.KINDS for task in buffer.sample(kind, rng, b)]
    proposer_rows, _, statuses, proposed = play.propose(state.params, references, rng, jax.random.fold_in(key, 0))

    # solver tasks: per kind, the valid new proposals first, then tasks drawn from the buffer
    solver_tasks, source = [], []  # source: index of the proposal a solver task came from, or -1
    for k, kind in enumerate(azt.KINDS):
        new = [(i, proposed[i]) for i in range(k * b, (k + 1) * b) if proposed[i] is not None]
        solver_tasks += [task for _, task in new] + buffer.sample(kind, rng, b - len(new))
        source += [i for i, _ in new] + [-1] * (b - len(new))
    solver_rows, _, grades = play.solve(state.params, solver_tasks, jax.random.fold_in(key, 1))

    correct = np.array([g == "correct" for g in grades], np.float32)
    solver_reward = format_aware_reward(1.0, correct > 0, np.array([g != azt.FORMAT_ERROR for g in grades]))
    solve_rate = np.zeros(len(references), np.float32)
    for task_index, proposal in enumerate(source):
        if proposal >= 0:
            solve_rate[proposal] = correct[task_index * play.group : (task_index + 1) * play.group].mean()
    valid = np.array([s == azt.OK for s in statuses])
    proposer_reward = format_aware_reward(learnability_reward(solve_rate), valid,
                                          np.array([s != azt.FORMAT_ERROR for s in statuses]))
    for task in proposed:
        if task is not None:
            buffer.add(task)

    class_ids = trr_class_ids(b, play.group)
    rewards = jnp.concatenate([proposer_reward, solver_reward])
    advantages = task_relative_advantages(rewards, class_ids, 6, eps=config.rl.advantage_eps, std_ddof=config.rl.std_ddof)
    (p_tokens, p_mask, p_samples), (s_tokens, s_mask, s_samples) = proposer_rows, solver_rows
    batch = RolloutBatch(
        prompt_tokens=np.concatenate([p_tokens, np.repeat(s_tokens, play.group, 0)]),
        prompt_mask=np.concatenate([p_mask, np.repeat(s_mask, play.group, 0)]),
        completion_tokens=np.concatenate([np.asarray(p_samples.tokens), np.asarray(s_samples.tokens)]),
        completion_mask=np.concatenate([np.asarray(p_samples.mask), np.asarray(s_samples.mask)]),
        advantages=np.asarray(advantages),
    )
    state, update_metrics = play.update(state, play.ctx.shard(batch), key)

    metrics = {"propose/valid_rate": valid.mean(), "propose/format_error_rate": np.mean([s == azt.FORMAT_ERROR for s in statuses]),
               "propose/learnability": float(np.mean(np.asarray(learnability_reward(solve_rate))[valid])) if valid.any() else 0.0,
               "solve/accuracy": correct.mean(), "solve/format_error_rate": np.mean([g == azt.FORMAT_ERROR for g in grades]),
               "reward/propose": float(jnp.mean(proposer_reward)), "reward/solve": float(jnp.mean(solver_reward))}
    for k, kind in enumerate(azt.KINDS):
        metrics[f"propose/valid_rate/{kind}"] = valid[class_ids[: len(valid)] == k].mean()
        metrics[f"solve/accuracy/{kind}"] = correct[class_ids[len(valid):] == 3 + k].mean()
        metrics[f"buffer/size/{kind}"] = len(buffer.tasks[kind])
    isolation, memory = mechanism()  # the sandbox's mechanisms, as metrics of 1 (docs/sandbox.md)
    metrics.update({f"sandbox/isolation/{isolation}": 1, f"sandbox/memory/{memory}": 1})
    return state, {**metrics, **jax.device_get(update_metrics)}
