"""RL with a reward method: the task's verifier (RLVR) or a label-free reward (TTRL, INTUITOR, RENT, Co-Reward).

One step: each of the S processes draws its own rl.prompts_per_step/S prompts (its slice of the
global batch; in process order, the prompts a one-process run draws), places them on the global
mesh with the other processes' and samples them together; it then scores the completions of its
own prompts on its host (`process_rows`: verifiers read only local rows) and the scored rows
become the global training batch again, for the algorithm's update (`train.rl_step`). Reward
metrics are averaged over processes: all log the same. DAPO keeps sampling until every group has
a reward signal. Label-free rewards and test-time training (`method.test_time`: RL on the
held-out prompts themselves, unlabeled) also report held-out pass@1 and maj@G before and after.

Curricula (`config.curriculum`, docs/curricula.md): the prompts come from shuffled passes over the
split ("uniform"), or SEC draws a category for each prompt slot (`train.curriculum`) and then the
next problem of that category; a task of several categories logs per-category metrics either way.
With `curriculum.hint_all_fail`, the groups whose samples all fail are sampled once more with the
start of the worked solution appended to the prompt, so the hint is never in the loss.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental.multihost_utils import process_allgather

from jaxrl_self.algorithms.filtering import group_has_signal
from jaxrl_self.algorithms.registry import algorithm_of
from jaxrl_self.algorithms.self_verification import self_reward_scores
from jaxrl_self.errors import ConfigError
from jaxrl_self.eval.self_verification import summarize_self_verification
from jaxrl_self.methods import LABEL_FREE, build_reward_method
from jaxrl_self.methods.test_time import make_vote_evaluator
from jaxrl_self.models.tokenizer import ExtendedTokenizer
from jaxrl_self.parallel import process_rows
from jaxrl_self.rewards.answers import extract_answer
from jaxrl_self.rewards.host import encode_references
from jaxrl_self.tasks.base import task_categories
from jaxrl_self.tasks.iterator import CategoryIterator
from jaxrl_self.train import curriculum
from jaxrl_self.train.dynamic_sampling import collect_groups, make_group_merger
from jaxrl_self.train.loop import AFTER_SFT, Recipe
from jaxrl_self.train.policy import verdict_logprobs
from jaxrl_self.train.rise import (balanced_rows, choose_solutions, make_rise_scorer, make_verification_rollout, rise_token_ids,
                                   rise_tokens_to_add)
from jaxrl_self.train.rl_step import make_batch_builder, make_reward_scorer, make_rl_update, needs_reference, refresh_reference


@functools.lru_cache(maxsize=4)
def make_self_scorer(graphdef, verdict_id: int, beta: float, c_ref: float):
    """Jitted `(params, prompt_tokens [N, P], prompt_mask, completion_tokens [N, T], completion_mask,
    finished [N] bool) -> r_s [N]`: each completion's LaSeR self-reward under `params`, read after
    its stop token; 0 for an unfinished completion (`Samples.finished`: truncated, it has no
    position to read the verdict after), as in the advantage blend."""
    @jax.jit
    def self_scores(params, prompt_tokens, prompt_mask, completion_tokens, completion_mask, finished):
        lz = verdict_logprobs(nnx.merge(graphdef, params), prompt_tokens, prompt_mask, completion_tokens, completion_mask, verdict_id)
        return jnp.where(finished, self_reward_scores(lz, beta_v=beta, c_ref=c_ref), 0.0)

    return self_scores


def self_scorer(ctx):
    """The run's self-verification score of its completions, `(params, prompt_tokens [N, P],
    prompt_mask, completion_tokens [N, T], completion_mask, finished [N] bool) -> [N]`: LaSeR's
    self-reward r_s (`rl.self_verify`), RISE's P(<yes>) (`rl.rise`), or None for a run with neither."""
    if ctx.verdict_id is not None:
        sv = ctx.config.rl.self_verify
        return make_self_scorer(ctx.graphdef, ctx.verdict_id, sv.beta, sv.c_ref)
    rise = ctx.config.rl.rise
    if rise.prompts > 0:  # RISE appends its marker to any solution, so it verifies unfinished ones too
        rise_scores = make_rise_scorer(ctx.graphdef, rise_token_ids(ctx.tokenizer, rise.marker, rise.yes, rise.no))
        return lambda params, prompt_tokens, prompt_mask, completion_tokens, completion_mask, finished: rise_scores(
            params, prompt_tokens, prompt_mask, completion_tokens, completion_mask)
    return None


def evaluate_self_verification(ctx, params, num_samples: int, temperature: float, max_new_tokens=None) -> dict:
    """How well the policy verifies its own held-out answers (LaSeR or RISE, `summarize_self_verification`):
    `num_samples` samples per held-out prompt at `temperature` (of up to `max_new_tokens`, default
    the run's), each scored by the verifier and by the policy (`self_scorer`: LaSeR's r_s,
    docs/algorithms.md#laser-last-token-self-reward, or RISE's P(<yes>),
    docs/algorithms.md#rise-generated-self-verification). Needs a run with one of them."""
    cfg = ctx.config
    g, size, examples = num_samples, cfg.eval.batch_size, ctx.test_examples
    sampler = ctx.sampler(g, temperature, max_new_tokens)
    self_scores = self_scorer(ctx)
    records = []
    for start in range(0, len(examples), size):
        chunk = examples[start:start + size]
        padded = chunk + [chunk[0]] * (size - len(chunk))  # one shape for every call
        tokens, mask = ctx.encode_prompts([e.prompt for e in padded])
        key = jax.random.fold_in(jax.random.key(cfg.seed), start)
        samples = ctx.sample(sampler, params, tokens, mask, key)
        rows = (jnp.repeat(jnp.asarray(tokens), g, 0), jnp.repeat(jnp.asarray(mask), g, 0), samples.tokens, samples.mask)
        scores = self_scores(params, *rows, samples.finished)
        out_tokens, out_mask, scores = process_allgather((samples.tokens, samples.mask, scores), tiled=True)
        for i, example in enumerate(chunk):
            texts = [ctx.tokenizer.decode(t[m].tolist()) for t, m in zip(out_tokens[i * g:(i + 1) * g], out_mask[i * g:(i + 1) * g])]
            records.append({"scores": scores[i * g:(i + 1) * g],
                            "correct": [bool(ctx.score(t, example.reference, prompt=example.prompt)["correct"]) for t in texts],
                            "answers": [extract_answer(t) for t in texts], "reference": example.reference})
    return summarize_self_verification(records)


class RLVR(Recipe):
    """The default job's RL phase (module docstring)."""

    name = "rl"

    def __init__(self, config):
        super().__init__(config)
        self.config_rise = config.rl.rise
        self.rise = config.rl.rise.prompts > 0  # RISE: verification groups of the step's own solutions
        self.rise_reserved = []  # the RISE strings added to the tokenizer: never part of a solution
        if self.rise:
            self.extend_tokenizer = self.with_rise_tokens

    def with_rise_tokens(self, tokenizer):
        """`tokenizer` with the RISE marker and verdicts it lacks added as reserved tokens."""
        rise = self.config_rise
        self.rise_reserved = rise_tokens_to_add(tokenizer, rise.marker, rise.yes, rise.no)
        return ExtendedTokenizer(tokenizer, self.rise_reserved) if self.rise_reserved else tokenizer

    def setup(self, ctx):
        cfg, rl = ctx.config, ctx.config.rl
        self.name = f"RL ({rl.algorithm})"
        if self.rise:
            self.rise_ids = rise_token_ids(ctx.tokenizer, rl.rise.marker, rl.rise.yes, rl.rise.no)
            width = ctx.prompt_len + ctx.new_tokens + len(self.rise_ids.marker) + 1
            if width > ctx.model_config.max_position_embeddings:
                raise ConfigError(f"config.rl.rise.marker: a verification row (task.max_prompt_len + rl.max_new_tokens + the "
                                  f"marker's {len(self.rise_ids.marker)} token(s) + the verdict = {width} tokens) exceeds the "
                                  f"model's context of {ctx.model_config.max_position_embeddings}")
            ctx.never_sampled += tuple(ctx.tokenizer.encode(token)[0] for token in self.rise_reserved)
            self.verification_rollout = make_verification_rollout(ctx.graphdef, self.rise_ids, rl.group_size, rl.temperature)
        self.method = build_reward_method(cfg, ctx.task, ctx.tokenizer)
        self.sampler = ctx.sampler(rl.group_size, rl.temperature, token_statistics=self.method.needs_token_statistics)
        self.score_rewards = make_reward_scorer(rl, self.method)
        self.build_batch = make_batch_builder(ctx.graphdef, rl, self.method, ctx.mesh, verdict_id=ctx.verdict_id)
        self.update = make_rl_update(ctx.graphdef, ctx.rl_optimizer, rl, ctx.mesh, verdict_id=ctx.verdict_id)
        self.merge = make_group_merger(rl.group_size)
        # label-free rewards sharpen the sampled answers: their runs report held-out pass@1 and maj@G
        self.votes = cfg.method.test_time or rl.reward in LABEL_FREE
        self.evaluate_votes = make_vote_evaluator(
            ctx.graphdef, ctx.task, ctx.test_examples, prompt_len=ctx.prompt_len, max_new_tokens=ctx.new_tokens,
            group_size=rl.group_size, temperature=rl.temperature, batch_size=cfg.eval.batch_size,
            seed=cfg.seed) if self.votes else None
        # the RL prompts: the training split, or with test-time training the held-out prompts, unlabeled
        self.examples = ctx.test_examples if cfg.method.test_time else ctx.train_examples
        self.setup_curriculum(ctx)

    def setup_curriculum(self, ctx):
        """The categories of the RL prompts, SEC's category streams and the hints' prompt room."""
        cfg = ctx.config
        self.category_names, categories = task_categories(ctx.task, "test" if cfg.method.test_time else "train")
        self.categories = categories[: len(self.examples)]
        self.sec = cfg.curriculum.name == "sec"
        self.per_category = self.sec or len(self.category_names) > 1
        if self.sec and len(self.category_names) < 2:
            raise ConfigError(f"config.curriculum.name: 'sec' needs a task of several problem categories; task "
                              f"{cfg.task.name!r} has one ({self.category_names[0]!r})")
        if self.sec:
            try:
                CategoryIterator(self.categories, len(self.category_names), cfg.seed + 1)
            except ValueError as error:
                raise ConfigError(f"config.curriculum.name: 'sec' draws from every category of task {cfg.task.name!r}, "
                                  f"but {error} (categories: {', '.join(self.category_names)})") from None
        # with hints, every prompt is encoded with room for the longest hint
        self.hint_tokens = (int(np.ceil(cfg.curriculum.hint_fraction * cfg.rl.max_new_tokens))
                            if cfg.curriculum.hint_all_fail else 0)
        self.prompt_len = ctx.prompt_len + self.hint_tokens

    def rl_state(self, ctx, params):
        rl = ctx.config.rl
        return ctx.rl_state(params, with_reference=needs_reference(rl), with_value_head=algorithm_of(rl).value_head)

    def initial_extra(self, ctx):
        if self.sec:  # SEC's values, one per category (JSON floats hold float32 exactly)
            return {"iterator": None, "sec_values": [0.0] * len(self.category_names)}
        return {"iterator": None}

    def hint(self, ctx, example) -> str:
        """The start of `example`'s worked solution: its first `curriculum.hint_fraction` of tokens,
        at most `self.hint_tokens`."""
        ids = ctx.tokenizer.encode(example.solution)
        return ctx.tokenizer.decode(ids[: min(int(ctx.config.curriculum.hint_fraction * len(ids)), self.hint_tokens)])

    def prompts_of(self, ctx, indices, hinted=None):
        """Prompt arrays `[B', P]` and reference bytes `[B', W]` for the method's prompts; the prompts
        where `hinted` `[B']` is True end with a hint (`hint`). P is `task.max_prompt_len`, plus the
        longest hint when hints are on."""
        examples = [self.examples[i] for i in indices]
        prompts = self.method.prompts(examples)
        if hinted is not None:
            prompts = [prompt + self.hint(ctx, example) if hint else prompt
                       for prompt, example, hint in zip(prompts, examples, hinted)]
        tokens, mask = ctx.encode_prompts(prompts, self.prompt_len)
        return tokens, mask, encode_references(self.method.references(examples), ctx.config.task.max_reference_len)

    def prompt_source(self, ctx, extra, key):
        """`(next_prompts, iterator)`: `next_prompts(round) -> (indices, categories)`, this process's
        example indices `[B']` and their categories `[B']` for a sampling round; the iterator's
        `get_state()` is the position to checkpoint. SEC draws the global batch's categories from the
        step's key (the same on every process) and each process keeps its slice."""
        rl = ctx.config.rl
        if not self.sec:
            iterator = ctx.prompt_iterator(len(self.examples), rl.prompts_per_step, extra["iterator"])

            def next_prompts(round_index):
                indices = iterator.next()
                return indices, self.categories[indices]
            return next_prompts, iterator
        iterator = CategoryIterator(self.categories, len(self.category_names), ctx.config.seed + 1)
        if extra["iterator"]:
            iterator.set_state(extra["iterator"])
        values, temperature = jnp.asarray(extra["sec_values"], jnp.float32), ctx.config.curriculum.temperature
        share = rl.prompts_per_step // jax.process_count()
        mine = slice(jax.process_index() * share, (jax.process_index() + 1) * share)

        def next_prompts(round_index):
            wanted = np.asarray(curriculum.draw_categories(values, temperature, curriculum.category_key(key, round_index),
                                                           rl.prompts_per_step))
            return iterator.next(wanted)[mine], wanted[mine]
        return next_prompts, iterator

    def step(self, ctx, state, extra, rl_step, key, control):
        rl, g = ctx.config.rl, ctx.config.rl.group_size
        next_prompts, iterator = self.prompt_source(ctx, extra, key)
        rounds = []  # (categories [B'], rewards) of each sampling round, for the per-category statistics

        def sample_groups(indices, round_index, hinted=None):
            """Samples G completions for each of the prompts `indices`; scores this process's rows."""
            tokens, mask, refs = self.prompts_of(ctx, indices, hinted)
            samples = ctx.sample(self.sampler, state.params, tokens, mask, jax.random.fold_in(key, round_index))
            # rows b*G+g are prompt-major and both arrays are split by rows over the same mesh axes
            # (validate_devices: prompts_per_step divisible by them), so this process gets whole groups:
            # the G completions of each of its own prompts, in its prompts' order
            samples = process_rows(samples, ctx.mesh)
            batch = {"prompt_tokens": np.repeat(tokens, g, 0), "prompt_mask": np.repeat(mask, g, 0),
                     "completion_tokens": samples.tokens, "completion_mask": samples.mask,
                     "sampler_entropy": samples.entropy, "sampler_mean_logp_vocab": samples.mean_logp_vocab}
            rewards, reward_metrics = self.score_rewards(batch, np.repeat(refs, g, 0))
            reward_metrics = {**reward_metrics, "response_length/mean": jnp.mean(samples.lengths),
                              "truncated_fraction": jnp.mean(samples.truncated)}
            if self.hint_tokens:  # which problem each row is, to hint it later
                batch["example"] = np.repeat(indices, g)
            if ctx.verdict_id is not None or self.rise:  # LaSeR and RISE: which rows ended with the stop token
                batch["finished"] = np.asarray(samples.finished)
            if ctx.verdict_id is not None:  # LaSeR: this step's weights
                rows, sv = len(batch["prompt_tokens"]), ctx.config.rl.self_verify
                blend_from = sv.warmup_steps + sv.advantage_warmup_steps
                batch.update(verdict_coef=np.full(rows, sv.coef if rl_step >= sv.warmup_steps else 0.0, np.float32),
                             verdict_blend=np.full(rows, sv.advantage_coef if rl_step >= blend_from else 0.0, np.float32))
            return (batch, rewards), rewards["reward"], reward_metrics

        def draw(round_index):
            """Samples and scores the next B prompts."""
            indices, categories = next_prompts(round_index)
            (batch, rewards), reward, reward_metrics = sample_groups(indices, round_index)
            rounds.append((categories, rewards))
            return (batch, rewards), reward, reward_metrics

        # DAPO keeps sampling until every group has reward signal; others sample one round
        dynamic = algorithm_of(rl).dynamic_sampling
        max_rounds = 1 + rl.dapo.max_resample_rounds if dynamic else 1
        filter_groups = dynamic or rl.filter_zero_advantage_groups
        (batch, rewards), group_valid, score_metrics = collect_groups(draw, self.merge, group_size=g, max_rounds=max_rounds,
                                                                      filter_groups=filter_groups)
        new_extra = {"iterator": iterator.get_state()}
        if self.per_category:
            stats = self.category_statistics(ctx, rounds)
            values = None
            if self.sec:
                values = np.asarray(curriculum.update(extra["sec_values"], stats["learnability"], stats["groups"],
                                                      ctx.config.curriculum.step_size))
                new_extra["sec_values"] = [float(v) for v in values]
            score_metrics.update(curriculum.category_metrics(stats, self.category_names, g, values,
                                                             ctx.config.curriculum.temperature))
        if self.hint_tokens:
            batch, rewards, group_valid, hint_metrics = self.with_hints(sample_groups, batch, rewards, group_valid,
                                                                        max_rounds, filter_groups, g)
            score_metrics.update(hint_metrics)
        if self.rise:
            batch, rewards, group_valid, rise_metrics = self.with_verifications(ctx, state, batch, rewards, group_valid, key,
                                                                               filter_groups)
            score_metrics.update(rise_metrics)
        batch, rewards, group_valid = ctx.shard((batch, rewards, group_valid))  # the global batch
        batch, batch_metrics = self.build_batch(state, batch, rewards, group_valid, key)
        state, update_metrics = self.update(state, control.inject_nan(ctx.config.sft.steps + rl_step, batch), key)
        state = refresh_reference(state, rl, rl_step)
        metrics = {**score_metrics, **jax.device_get({**batch_metrics, **update_metrics})}
        metrics.update({"reward/mean": metrics.pop("reward/reward"), "accuracy/train": metrics.pop("reward/correct"),
                        "sampler/compilations": self.sampler.compilations()})
        return state, new_extra, metrics

    def category_statistics(self, ctx, rounds) -> dict:
        """`curriculum.category_statistics` of every sampling round (all groups drawn, before any
        filtering), summed over rounds and processes: `[K]` host arrays, the same on every process."""
        g, ddof = ctx.config.rl.group_size, ctx.config.rl.std_ddof
        per_round = [curriculum.category_statistics(rewards["reward"].reshape(-1, g),
                                                    rewards.get("correct", rewards["reward"]).reshape(-1, g),
                                                    categories, len(self.category_names), ddof)
                     for categories, rewards in rounds]
        summed = jax.device_get(jax.tree.map(lambda *x: sum(x), *per_round))
        return {name: np.sum(values, axis=0) for name, values in process_allgather(summed).items()}

    def with_hints(self, sample_groups, batch, rewards, group_valid, round_index, filter_groups, g):
        """The rollout with every group whose samples all failed replaced by G new samples of its
        prompt with a hint (`prompts_of`); a hinted group with reward signal becomes valid. Every
        process samples when any has such a group. Returns (batch without "example", rewards,
        group_valid, metrics "hints/groups": share of groups hinted, "hints/solved": share of the
        hinted groups with a correct sample)."""
        failing = ~np.any(np.asarray(rewards["correct"]).reshape(-1, g) > 0, axis=1)
        examples = np.asarray(batch.pop("example"))[::g]
        solved = np.zeros_like(failing)
        if np.any(process_allgather(np.any(failing))):
            (hinted, hinted_rewards), reward, _ = sample_groups(examples, round_index, hinted=failing)
            hinted.pop("example")
            rows = np.repeat(failing, g)
            pick = lambda new, old: jnp.where(rows.reshape(-1, *[1] * (np.ndim(old) - 1)), new, old)
            batch, rewards = jax.tree.map(pick, (hinted, hinted_rewards), (batch, rewards))
            solved = failing & np.any(np.asarray(hinted_rewards["correct"]).reshape(-1, g) > 0, axis=1)
            if filter_groups:
                group_valid = group_valid | (failing & np.asarray(group_has_signal(reward.reshape(-1, g))))
        counts = np.sum(process_allgather(np.stack([failing, solved]).sum(axis=1)), axis=0).astype(float)
        groups = len(failing) * jax.process_count()
        return batch, rewards, group_valid, {"hints/groups": counts[0] / groups, "hints/solved": counts[1] / max(counts[0], 1.0)}

    def with_verifications(self, ctx, state, batch, rewards, group_valid, key, filter_groups):
        """The rollout (this process's rows) with `rl.rise.prompts` groups of verifications of its own
        solutions appended after its solve groups (`train.rise`): returns (batch of the four token
        arrays and "env_mask", the completions 1 + marker-length columns wider; rewards {"reward", "correct"}; group_valid; the
        "rise/..." metrics). The verify groups trained on are as many of right as of wrong solutions
        (`balanced_rows`: none in a step with one class only, whose verdicts would all push one way),
        and, when groups are filtered, only those whose rewards differ."""
        g, mesh = ctx.config.rl.group_size, ctx.mesh
        names = ("prompt_tokens", "prompt_mask", "completion_tokens", "completion_mask")
        solve = {name: np.asarray(batch[name]) for name in names}
        solve["env_mask"] = np.zeros_like(solve["completion_mask"])
        correct, finished = np.asarray(rewards["correct"]) > 0, np.asarray(batch["finished"])
        rise_key = jax.random.fold_in(key, jax.process_index() + 1000003)
        rng = np.random.default_rng(np.asarray(jax.random.key_data(rise_key)))
        rows = choose_solutions(correct, finished, ctx.config.rl.rise.prompts // jax.process_count(), rng)
        chosen = ctx.shard(tuple(solve[name][rows] for name in names) + (correct[rows].astype(np.int32),))
        names += ("env_mask",)
        verify, verify_rewards, metrics = self.verification_rollout(state.params, *chosen, jax.random.fold_in(key, 7))
        verify, verify_rewards = process_rows((verify, verify_rewards), mesh)
        widen = verify["completion_tokens"].shape[1] - solve["completion_tokens"].shape[1]
        for name in ("completion_tokens", "completion_mask", "env_mask"):
            solve[name] = np.pad(solve[name], ((0, 0), (0, widen)))
        merged = {name: np.concatenate([solve[name], verify[name]]) for name in names}
        merged_rewards = {"reward": np.concatenate([np.asarray(rewards["reward"]), verify_rewards]),
                          "correct": np.concatenate([np.asarray(rewards["correct"], np.float32), (verify_rewards > 0).astype(np.float32)])}
        verify_valid = balanced_rows(correct[rows])  # as many right as wrong solutions, or none
        if filter_groups:
            verify_valid &= np.asarray(group_has_signal(verify_rewards.reshape(-1, g)))
        return merged, merged_rewards, np.concatenate([np.asarray(group_valid), verify_valid]), jax.device_get(metrics)

    def evaluate(self, ctx, state, full):
        results = super().evaluate(ctx, state, full)
        if full and self.votes:
            results.update({f"eval/votes/{k}": v for k, v in self.evaluate_votes(state.params).items()})
        if full and self_scorer(ctx) is not None:
            rl = ctx.config.rl
            verified = evaluate_self_verification(ctx, state.params, rl.group_size, rl.temperature)
            results.update({f"eval/self_verify/{k}": v for k, v in verified.items()})
        return results

    def progress(self, metrics):
        return {"reward": metrics["reward/mean"], "acc": metrics["accuracy/train"]}

    def summary(self, ctx, results):
        config, rl = ctx.config, ctx.config.rl
        after = results["after RL"] if "after RL" in results else results[AFTER_SFT]
        summary = {"held-out greedy accuracy": {"after SFT": results[AFTER_SFT]["eval/accuracy"], "after RL": after["eval/accuracy"]},
                   "task": config.task.name, "algorithm": rl.algorithm, "held-out examples": len(ctx.test_examples)}
        if self.votes:
            votes = lambda r: {k[len("eval/votes/"):]: v for k, v in r.items() if k.startswith("eval/votes/")}
            trained_on = "the held-out prompts (test-time training, unlabeled)" if config.method.test_time else "the training prompts"
            summary[f"held-out pass@1 / maj@{rl.group_size} at T={rl.temperature}, RL on {trained_on}"] = {
                "before": votes(results[AFTER_SFT]), "after": votes(after)}
        return summary
