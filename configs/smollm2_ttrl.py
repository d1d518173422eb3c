"""TTRL (label-free) on SmolLM2-135M-Instruct: the reward is agreement with the majority
<answer> of the prompt's own group of samples; the gold answers are only logged.

Same model, task and budget as configs/smollm2_grpo.py (see there for the GGUF file), with
fewer prompts and a larger group per step, since the vote needs several samples per prompt.

  jaxrl-self train --config configs/smollm2_ttrl.py --workdir runs/smollm2_ttrl
"""
import pathlib

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(pathlib.Path(__file__).with_name("smollm2_grpo.py"))
    config.rl.reward = "ttrl"
    config.rl.prompts_per_step = 2
    config.rl.group_size = 8
    config.method.answer_max_tokens = 4  # the vote compares the first 4 tokens inside <answer>..</answer>
    return config
