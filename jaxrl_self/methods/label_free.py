"""Label-free recipes (docs/algorithms.md, sections below): the model's own consensus or confidence is the reward.

  TTRL        reward = agreement with the majority answer of the prompt's own group
              (docs/algorithms.md#ttrl-majority-vote)
  INTUITOR    reward = self-certainty KL(U || p) of the completion's tokens
              (docs/algorithms.md#intuitor-self-certainty)
  RENT        reward = minus the mean token entropy of the completion
              (docs/algorithms.md#rent-entropy-minimisation)
  Co-Reward   reward = agreement with the majority answer of the OTHER view's group, where the
              views are a prompt and its rephrasing
              (docs/algorithms.md#co-reward-cross-view-agreement)

Every reward is computed on device from the rollout alone: answers are compared as token arrays
(`rewards.token_rewards`), confidences come from the sampler's per-token statistics
(`sampler_entropy`, `sampler_mean_logp_vocab` `[N, T]`), so there is no second forward pass.
The references (gold labels) are used only for monitoring: the task's verifier scores each
completion into the "correct" component (logged as `accuracy/train`), which never enters "reward".

Rows are N = B*G, row b*G+g being completion g of prompt b. Answers are the token spans between
the tokenizer's encodings of "<answer>" and "</answer>", cut to `config.method.answer_max_tokens`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxrl_self.config import ConfigError
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.rewards.host import make_host_reward_fn
from jaxrl_self.rewards.self_rewards import negative_entropy, self_certainty
from jaxrl_self.rewards.token_rewards import extract_answer_tokens, majority_vote
from jaxrl_self.tasks.base import Example


def group_answers(batch: Mapping[str, jax.Array], open_ids: Sequence[int], close_ids: Sequence[int], width: int,
                  group_size: int, pad_id: int) -> tuple[jax.Array, jax.Array]:
    """Extracted answers per group: `([B, G, width] int32, valid [B, G] bool)` from the `[N, T]` completions."""
    answers, valid = extract_answer_tokens(batch["completion_tokens"], batch["completion_mask"], open_ids, close_ids,
                                           width, pad_id)
    return answers.reshape(-1, group_size, width), valid.reshape(-1, group_size)


def majority_labels(answers: jax.Array, valid: jax.Array) -> dict[str, jax.Array]:
    """Pseudo-label of each group by majority vote (ties: earliest answer).

    Args:
      answers: `[B, G, A] int32`; valid: `[B, G] bool` (invalid answers never vote).
    Returns:
      {"label": `[B, A]` the winning answer, "label_valid": `[B]` bool (some answer was valid),
      "index": `[B]` int32 a row of the group holding the label, "ratio": `[B]` float32 votes / G}.
    """
    index, count, _ = majority_vote(answers, valid)
    label = jnp.take_along_axis(answers, index[:, None, None], axis=1)[:, 0]
    return {"label": label, "label_valid": count > 0, "index": index,
            "ratio": count.astype(jnp.float32) / answers.shape[1]}


def agreement(answers: jax.Array, valid: jax.Array, label: jax.Array, label_valid: jax.Array) -> jax.Array:
    """`[B, G] float32`: 1 where a valid answer equals its group's valid label `[B, A]`, else 0."""
    same = jnp.all(answers == label[:, None, :], axis=-1)
    return (same & valid & label_valid[:, None]).astype(jnp.float32)


def label_correctness(correct: jax.Array, labels: Mapping[str, jax.Array]) -> jax.Array:
    """`[B] float32`: whether each group's pseudo-label is right, read off the gold correctness
    `[B, G]` of the row that holds it (0 when the group has no label). Monitoring only."""
    held = jnp.take_along_axis(correct, labels["index"][:, None], axis=1)[:, 0]
    return held * labels["label_valid"].astype(jnp.float32)


class LabelFreeMethod(RewardMethod):
    """Shared parts: the group size, answer tags, and gold-label monitoring through the task's verifier."""

    def __init__(self, config, task, tokenizer):
        self.group_size = config.rl.group_size
        self.vocab_size = tokenizer.vocab_size
        self.pad_id = tokenizer.pad_id
        self.open_ids = tuple(tokenizer.encode("<answer>"))
        self.close_ids = tuple(tokenizer.encode("</answer>"))
        self.answer_width = config.method.answer_max_tokens
        if not 1 <= self.answer_width <= config.rl.max_new_tokens:
            raise ConfigError(f"config.method.answer_max_tokens: must be in [1, rl.max_new_tokens={config.rl.max_new_tokens}], "
                              f"got {self.answer_width}")
        self._gold = make_host_reward_fn(task.score, tokenizer.decode, ("correct",))

    def monitor(self, batch, reference_bytes) -> dict[str, jax.Array]:
        """{"correct": `[N]` gold correctness, "verifier_failures": `[3]`} — for logging only."""
        return self._gold(batch["completion_tokens"], batch["completion_mask"], reference_bytes)

    def answers(self, batch) -> tuple[jax.Array, jax.Array]:
        """`([B, G, A] int32, valid [B, G] bool)`: the extracted answers of each group."""
        return group_answers(batch, self.open_ids, self.close_ids, self.answer_width, self.group_size, self.pad_id)


class TTRLReward(LabelFreeMethod):
    """TTRL: reward 1 for agreeing with the group's majority answer; trains on a random subset of
    `config.method.ttrl_train_samples` of the G completions of each prompt (0 = all G).

    Logged per batch: "majority_ratio" (votes of the winner / G), "label_accuracy" (pseudo-label
    equals gold = maj@G of the batch), "reward_accuracy" (reward equals the gold-based reward),
    and "correct" (= pass@1 of the batch, as `accuracy/train`).
    """

    name = "ttrl"

    def __init__(self, config, task, tokenizer):
        super().__init__(config, task, tokenizer)
        self.train_samples = config.method.ttrl_train_samples or self.group_size
        if not 1 <= self.train_samples <= self.group_size:
            raise ConfigError(f"config.method.ttrl_train_samples: must be in [0, rl.group_size={self.group_size}] "
                              f"(0 = all), got {config.method.ttrl_train_samples}")
        rows = config.rl.prompts_per_step * self.train_samples
        parts = config.rl.minibatches * config.rl.micro_batches
        if rows % parts:
            raise ConfigError(f"config.method.ttrl_train_samples: prompts_per_step*ttrl_train_samples ({rows}) must be "
                              f"divisible by rl.minibatches*rl.micro_batches ({parts})")

    def reward_fn(self, batch, reference_bytes):
        answers, valid = self.answers(batch)
        labels = majority_labels(answers, valid)
        reward = agreement(answers, valid, labels["label"], labels["label_valid"])
        gold = self.monitor(batch, reference_bytes)
        correct = gold["correct"].reshape(reward.shape)
        per_group = lambda x: jnp.repeat(x, self.group_size)
        return {"reward": reward.reshape(-1), "correct": gold["correct"],
                "majority_ratio": per_group(labels["ratio"]),
                "label_accuracy": per_group(label_correctness(correct, labels)),
                "reward_accuracy": (reward == correct).astype(jnp.float32).reshape(-1),
                "verifier_failures": gold["verifier_failures"]}

    def select_rows(self, batch, rewards, key):
        """A random subset of `train_samples` rows of every group (advantages were computed from all G)."""
        if self.train_samples == self.group_size:
            return batch
        num_groups = jax.tree.leaves(batch)[0].shape[0] // self.group_size
        keys = jax.random.split(jax.random.fold_in(key, 0x77), num_groups)
        picked = jax.vmap(lambda k: jax.random.permutation(k, self.group_size)[:self.train_samples])(keys)
        rows = (jnp.arange(num_groups)[:, None] * self.group_size + jnp.sort(picked, axis=1)).reshape(-1)
        return jax.tree.map(lambda x: x[rows], batch)


class IntuitorReward(LabelFreeMethod):
    """INTUITOR: reward = self-certainty, the masked mean over tokens of KL(U || p_t) under the
    sampling policy (raw distribution), from the sampler's `sampler_mean_logp_vocab`."""

    name = "intuitor"
    needs_token_statistics = True

    def reward_fn(self, batch, reference_bytes):
        reward = self_certainty(batch["sampler_mean_logp_vocab"], batch["completion_mask"], self.vocab_size)
        return {"reward": reward, **self.monitor(batch, reference_bytes)}


class RentReward(LabelFreeMethod):
    """RENT: reward = -(1/L) sum_t H_t, the negative mean token entropy, from `sampler_entropy`."""

    name = "rent"
    needs_token_statistics = True

    def reward_fn(self, batch, reference_bytes):
        reward = negative_entropy(batch["sampler_entropy"], batch["completion_mask"])
        return {"reward": reward, **self.monitor(batch, reference_bytes)}


class CoRewardReward(LabelFreeMethod):
    """Co-Reward: B examples give 2B prompts — the B originals, then their B rephrasings — with G
    completions each; a completion's reward is agreement with the majority answer of the other
    view of its question.

    Logged: "label_accuracy" (the other view's label equals gold), "view_agreement" (both views'
    majority answers are equal and valid), "majority_ratio" (of the other view).
    """

    name = "co_reward"

    def prompts(self, examples: Sequence[Example]) -> list[str]:
        missing = [e.uid for e in examples if not e.rephrasing]
        if missing:
            raise ValueError(f"Co-Reward needs a rephrasing of every prompt; examples {missing[:5]} have none")
        return [e.prompt for e in examples] + [e.rephrasing for e in examples]

    def references(self, examples: Sequence[Example]) -> list[str]:
        return [e.reference for e in examples] * 2

    def reward_fn(self, batch, reference_bytes):
        answers, valid = self.answers(batch)
        labels = majority_labels(answers, valid)
        half = answers.shape[0] // 2
        swap = lambda x: jnp.roll(x, half, axis=0)  # group b <-> group b + B
        other = {name: swap(value) for name, value in labels.items()}
        reward = agreement(answers, valid, other["label"], other["label_valid"])
        gold = self.monitor(batch, reference_bytes)
        correct = gold["correct"].reshape(reward.shape)
        same_label = jnp.all(labels["label"] == other["label"], axis=-1) & labels["label_valid"] & other["label_valid"]
        per_group = lambda x: jnp.repeat(x, self.group_size)
        return {"reward": reward.reshape(-1), "correct": gold["correct"],
                "majority_ratio": per_group(other["ratio"]),
                "label_accuracy": per_group(swap(label_correctness(correct, labels))),
                "view_agreement": per_group(same_label.astype(jnp.float32)),
                "verifier_failures": gold["verifier_failures"]}
