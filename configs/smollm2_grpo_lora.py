"""configs/smollm2_grpo.py with rank-8 LoRA adapters (docs/lora.md): GRPO trains only the adapters
on every projection of SmolLM2-135M-Instruct; the base stays frozen (float32), the sampler and the
learner run base + adapters, and checkpoints hold the adapters and their optimizer state only.

  jaxrl-self train --config configs/smollm2_grpo_lora.py --workdir runs/smollm2_grpo_lora
"""
import pathlib

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(pathlib.Path(__file__).with_name("smollm2_grpo.py"))
    config.model.lora.rank = 8
    config.model.lora.alpha = 16.0
    config.model.lora.targets = "all"
    config.rl.learning_rate = 5e-4  # adapters start at zero (B = 0) and take a larger step than full fine-tuning's 5e-5
    return config
