"""GRPO-with-verifier: the reward is the task's own verifier run on the host (RLVR)."""
from __future__ import annotations

from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.rewards.host import make_host_reward_fn


class VerifierReward(RewardMethod):
    """reward = task.score(completion, reference)["reward"]; also logs "correct" and "format_ok"."""

    name = "verifier"

    def __init__(self, task, tokenizer):
        self._host_fn = make_host_reward_fn(task.score, tokenizer.decode)

    def reward_fn(self, batch, reference_bytes):
        return self._host_fn(batch["completion_tokens"], batch["completion_mask"], reference_bytes)
