"""RL with a reward method: the task's verifier (RLVR) or a label-free reward (TTRL, INTUITOR, RENT, Co-Reward).

One step: each of the S processes draws its own rl.prompts_per_step/S prompts (its slice of the
global batch; in process order, the prompts a one-process run draws), places them on the global
mesh with the other processes' and samples them together; it then scores the completions of its
own prompts on its host (`process_rows`: verifiers read only local rows) and the scored rows
become the global training batch again, for the algorithm's update (`train.rl_step`). Reward
metrics are averaged over processes: all log the same. DAPO keeps sampling until every group has
a reward signal. Label-free rewards and test-time training (`method.test_time`: RL on the
held-out prompts themselves, unlabeled) also report held-out pass@1 and maj@G before and after.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrl_self.algorithms.registry import algorithm_of
from jaxrl_self.methods import LABEL_FREE, build_reward_method
from jaxrl_self.methods.test_time import make_vote_evaluator
from jaxrl_self.parallel import process_rows
from jaxrl_self.rewards.host import encode_references
from jaxrl_self.train.dynamic_sampling import collect_groups, make_group_merger
from jaxrl_self.train.loop import AFTER_SFT, Recipe
from jaxrl_self.train.rl_step import make_batch_builder, make_reward_scorer, make_rl_update, needs_reference, refresh_reference


class RLVR(Recipe):
    """The default job's RL phase (module docstring)."""

    name = "rl"

    def setup(self, ctx):
        cfg, rl = ctx.config, ctx.config.rl
        self.name = f"RL ({rl.algorithm})"
        self.method = build_reward_method(cfg, ctx.task, ctx.tokenizer)
        self.sampler = ctx.sampler(rl.group_size, rl.temperature, token_statistics=self.method.needs_token_statistics)
        self.score_rewards = make_reward_scorer(rl, self.method)
        self.build_batch = make_batch_builder(ctx.graphdef, rl, self.method, ctx.mesh)
        self.update = make_rl_update(ctx.graphdef, ctx.rl_optimizer, rl, ctx.mesh)
        self.merge = make_group_merger(rl.group_size)
        # label-free rewards sharpen the sampled answers: their runs report held-out pass@1 and maj@G
        self.votes = cfg.method.test_time or rl.reward in LABEL_FREE
        self.evaluate_votes = make_vote_evaluator(
            ctx.graphdef, ctx.task, ctx.test_examples, prompt_len=ctx.prompt_len, max_new_tokens=ctx.new_tokens,
            group_size=rl.group_size, temperature=rl.temperature, batch_size=cfg.eval.batch_size,
            seed=cfg.seed) if self.votes else None
        # the RL prompts: the training split, or with test-time training the held-out prompts, unlabeled
        self.examples = ctx.test_examples if cfg.method.test_time else ctx.train_examples

    def rl_state(self, ctx, params):
        rl = ctx.config.rl
        return ctx.rl_state(params, with_reference=needs_reference(rl), with_value_head=algorithm_of(rl).value_head)

    def initial_extra(self, ctx):
        return {"iterator": None}

    def prompts_of(self, ctx, indices):
        """Prompt arrays `[B', P]` and reference bytes `[B', W]` for the method's prompts."""
        examples = [self.examples[i] for i in indices]
        tokens, mask = ctx.encode_prompts(self.method.prompts(examples))
        return tokens, mask, encode_references(self.method.references(examples), ctx.config.task.max_reference_len)

    def step(self, ctx, state, extra, rl_step, key, control):
        rl, g = ctx.config.rl, ctx.config.rl.group_size
        iterator = ctx.prompt_iterator(len(self.examples), rl.prompts_per_step, extra["iterator"])

        def draw(round_index):
            """Samples G completions for each of the next B prompts; scores this process's rows."""
            tokens, mask, refs = self.prompts_of(ctx, iterator.next())
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
            return (batch, rewards), rewards["reward"], reward_metrics

        # DAPO keeps sampling until every group has reward signal; others sample one round
        dynamic = algorithm_of(rl).dynamic_sampling
        max_rounds = 1 + rl.dapo.max_resample_rounds if dynamic else 1
        filter_groups = dynamic or rl.filter_zero_advantage_groups
        (batch, rewards), group_valid, score_metrics = collect_groups(draw, self.merge, group_size=g, max_rounds=max_rounds,
                                                                      filter_groups=filter_groups)
        batch, rewards, group_valid = ctx.shard((batch, rewards, group_valid))  # the global batch
        batch, batch_metrics = self.build_batch(state, batch, rewards, group_valid, key)
        state, update_metrics = self.update(state, control.inject_nan(ctx.config.sft.steps + rl_step, batch), key)
        state = refresh_reference(state, rl, rl_step)
        metrics = {**score_metrics, **jax.device_get({**batch_metrics, **update_metrics})}
        metrics.update({"reward/mean": metrics.pop("reward/reward"), "accuracy/train": metrics.pop("reward/correct"),
                        "sampler/compilations": self.sampler.compilations()})
        return state, {"iterator": iterator.get_state()}, metrics

    def evaluate(self, ctx, state, full):
        results = super().evaluate(ctx, state, full)
        if full and self.votes:
            results.update({f"eval/votes/{k}": v for k, v in self.evaluate_votes(state.params).items()})
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
