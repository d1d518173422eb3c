"""TTRL (label-free) on SmolLM2-135M-Instruct: the reward is agreement with the majority
<answer> of the prompt's own group of samples; the gold answers are only logged.

Same model, task and budget as configs/smollm2_grpo.py (see there for the GGUF file), with
fewer prompts and a larger group per step, since the vote needs several samples per prompt.

  jaxrl-self train --config configs/smollm2_ttrl.py --workdir runs/smollm2_ttrl
"""
import importlib.util
import pathlib


def get_config():
    spec = importlib.util.spec_from_file_location("_jaxrl_self_smollm2_grpo", pathlib.Path(__file__).with_name("smollm2_grpo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.rl.reward = "ttrl"
    config.rl.prompts_per_step = 2
    config.rl.group_size = 8
    config.method.answer_max_tokens = 4  # the vote compares the first 4 tokens inside <answer>..</answer>
    return config
