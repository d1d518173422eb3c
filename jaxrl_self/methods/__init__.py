"""Self-improvement recipes: each picks prompts, rewards and training rows for the RL loop."""
from __future__ import annotations

from jaxrl_self.config import ConfigError
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.methods.label_free import CoRewardReward, IntuitorReward, RentReward, TTRLReward
from jaxrl_self.methods.verifier import VerifierReward

LABEL_FREE = {"ttrl": TTRLReward, "intuitor": IntuitorReward, "rent": RentReward, "co_reward": CoRewardReward}
METHODS = ("verifier", *LABEL_FREE)


def build_reward_method(config, task, tokenizer) -> RewardMethod:
    """The recipe named by `config.rl.reward`."""
    name = config.rl.reward
    if name == "verifier":
        return VerifierReward(task, tokenizer)
    if name in LABEL_FREE:
        return LABEL_FREE[name](config, task, tokenizer)
    raise ConfigError(f"config.rl.reward: unknown reward method {name!r}; expected one of {METHODS}")
