"""What a self-improvement recipe plugs into the RL loop: which prompts to sample, how to reward
the completions, and which rows to train on.

The loop samples G completions for every prompt `prompts(examples)` returns, calls `reward_fn`
inside the jitted scoring step, computes advantages over each group of G, and updates on the rows
`select_rows` keeps. A recipe is a small class; the default (`VerifierReward`) is GRPO with the
task's verifier.

`batch` holds, for N = (number of prompts) * G rows: prompt_tokens/prompt_mask `[N, P]`,
completion_tokens/completion_mask `[N, T]`, and the sampler's per-token statistics
`sampler_entropy` / `sampler_mean_logp_vocab` `[N, T] float32` (computed only for a method that
sets `needs_token_statistics`; zeros otherwise). `reference_bytes [N, W] uint8`
holds the references (gold labels) row by row; label-free recipes may use them only for
monitoring metrics, never for "reward".
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax

from jaxrl_self.tasks.base import Example


class RewardMethod:
    """Base recipe: one prompt per example, references passed through, all rows trained on."""

    name = "base"
    needs_token_statistics = False  # whether reward_fn reads sampler_entropy / sampler_mean_logp_vocab

    def prompts(self, examples: Sequence[Example]) -> list[str]:
        return [e.prompt for e in examples]

    def references(self, examples: Sequence[Example]) -> list[str]:
        """Reference string of each prompt returned by `prompts` (same order)."""
        return [e.reference for e in examples]

    def reward_fn(self, batch: Mapping[str, jax.Array], reference_bytes: jax.Array) -> dict[str, jax.Array]:
        """`{"reward": [N] float32, ...named components}` (+ "verifier_failures" `[3] int32`)."""
        raise NotImplementedError

    def select_rows(self, batch, rewards: Mapping[str, jax.Array], key):
        """The rows of the train batch (a `train.batch.RolloutBatch` pytree) to train on (static
        shapes); default: all of them."""
        return batch
