"""PPO with GAE and a value head (docs/algorithms.md#ppo-value-head-and-gae) on the arithmetic task.

    jaxrl-self train --config configs/arithmetic_ppo.py --workdir runs/arithmetic_ppo

Loads configs/default.py (3-digit addition, SFT warm start) and overrides the RL algorithm and its
hyper-parameters. The value head is a linear layer on the policy's hidden states (jaxrl_self/train/value_head.py);
token k1 KL in the reward, whitened GAE advantages, clipped value loss, two epochs x two minibatches.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    rl = config.rl
    rl.algorithm = "ppo"
    rl.kl_coef = 0.04  # k1 penalty in the token reward
    rl.ppo.gamma = 1.0
    rl.ppo.gae_lambda = 0.95
    rl.ppo.value_coef = 0.1
    rl.ppo.value_clip_eps = 0.2
    rl.eps_low = rl.eps_high = 0.2
    rl.epochs = 2
    rl.minibatches = 2
    return config
