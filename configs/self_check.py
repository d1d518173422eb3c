"""A small label-free job on which confidence rewards can work: 1-digit addition with self-check
solutions (tasks/arithmetic.py), a 2-layer 64-wide model, 2000 SFT steps, then 60 GRPO steps with
RENT (docs/algorithms.md#rent-entropy-minimisation); `--config.rl.reward=intuitor` (or ttrl, co_reward) for the others.

The demonstrations compute the sum twice, each result off by one in 30% of them, and answer with a
uniform guess when the two disagree: the warm start is sure of its answer only after two agreeing
results, which is what lets a confidence reward tell right computations from wrong ones. The
report gives held-out greedy accuracy and pass@1 / maj@8 at T=1 before and after RL; the labels are
used for those and for the logged `accuracy/train` only. Measured in the README and in
tests/methods/test_confidence_training.py, which trains this config.

  jaxrl-self train --config configs/self_check.py --workdir runs/self_check_rent
Test-time training on the unlabeled held-out prompts: add --config.method.test_time=True.
"""
import pathlib

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(pathlib.Path(__file__).with_name("default.py"))
    config.task.update(digits=1, show_work=False, self_check=True, check_error_rate=0.3, max_prompt_len=8,
                       test_size=128)
    config.model.update(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                        max_position_embeddings=32)
    config.sft.update(steps=2000, batch_size=32, learning_rate=3e-3, warmup_steps=5)
    config.rl.update(reward="rent", steps=60, prompts_per_step=16, group_size=8, max_new_tokens=24, temperature=1.0,
                     learning_rate=1e-4, kl_coef=0.0)
    config.eval.update(num_examples=128, batch_size=128, every=20)
    return config
