"""TTRL (label-free) on SmolLM2-135M-Instruct: the reward is agreement with the majority
<answer> of the prompt's own group of samples; the gold answers are only logged.

Same model, task and budget as configs/smollm2_grpo.py (see there for the GGUF file), with 2
prompts x 8 samples per step at temperature 0.7. Measured result (README, "On a real model"):
0.22 -> 0.00 — the group converges on the constant reply <answer>1</answer>, which the vote
rewards fully: the majority-collapse failure of test-time RL without a verifier.

  jaxrl-self train --config configs/smollm2_ttrl.py --workdir runs/smollm2_ttrl
"""
import pathlib

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(pathlib.Path(__file__).with_name("smollm2_grpo.py"))
    config.rl.reward = "ttrl"
    config.rl.prompts_per_step = 2
    config.rl.group_size = 8
    config.rl.temperature = 0.7
    config.method.answer_max_tokens = 4  # the vote compares the first 4 tokens inside <answer>..</answer>
    return config
