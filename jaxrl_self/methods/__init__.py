"""Reward plug-ins of the RL recipe: each picks prompts, rewards and training rows (verifier,
label-free rewards, a user's own function); `run_scorer` scores a run's completions outside training."""
from __future__ import annotations

from jaxrl_self.config import ConfigError
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.methods.custom import CustomReward, is_custom, run_scorer
from jaxrl_self.methods.label_free import CoRewardReward, IntuitorReward, RentReward, TTRLReward
from jaxrl_self.methods.verifier import VerifierReward

LABEL_FREE = {"ttrl": TTRLReward, "intuitor": IntuitorReward, "rent": RentReward, "co_reward": CoRewardReward}
METHODS = ("verifier", *LABEL_FREE)
__all__ = ["LABEL_FREE", "METHODS", "RewardMethod", "build_reward_method", "run_scorer"]


def build_reward_method(config, task, tokenizer) -> RewardMethod:
    """The recipe named by `config.rl.reward`: a built-in method, or "module:function", a reward
    function of your own (`methods.custom`, docs/rewards.md)."""
    name = config.rl.reward
    if is_custom(name):
        return CustomReward(config, task, tokenizer)
    if name == "verifier":
        return VerifierReward(task, tokenizer)
    if name in LABEL_FREE:
        return LABEL_FREE[name](config, task, tokenizer)
    raise ConfigError(f"config.rl.reward: unknown reward method {name!r}; expected one of {METHODS} or 'module:function'")
