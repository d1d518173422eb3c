"""SCoRe (docs/algorithms.md#score): two-attempt self-correction on 1-digit addition with self-check
solutions (the sum computed twice, each result off by one in 30% of the demonstrations, a uniform
guess when the two disagree; tasks/arithmetic.py), a 2-layer 64-wide model.

Warm start: SFT on the worked solutions for attempt 1 and, after the `<retry>` marker, on attempt 2
demonstrations that keep a first attempt the verifier accepts and retry a wrong one with another
demonstration of the same problem (`method.retry_demos="copy"` repeats attempt 1 instead). Stage I
rewards attempt 2 while a strong KL holds attempt 1 at the reference; stage II rewards both
attempts with the shaped bonus alpha * (r2 - r1) on attempt 2. Reported after SFT, stage I and
stage II: held-out accuracy at attempts 1 and 2, their difference and the shares of
incorrect->correct and correct->incorrect, greedy and sampled at rl.temperature. This task's
mistakes are sampling errors (a greedy first attempt is nearly always consistent), so the sampled
figures are the ones that show self-correction.

    jaxrl-self train --config configs/score.py
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def _default_config():
    return load_config_file(Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.task.update(dict(digits=1, show_work=False, self_check=True, check_error_rate=0.3, max_prompt_len=8, test_size=128))
    # prompts of attempt 2 hold the problem, attempt 1 and <retry>: max_prompt_len + 2 * max_new_tokens + 1 positions in all
    config.model.update(dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                             max_position_embeddings=64))
    config.sft.update(dict(steps=1000, batch_size=32, learning_rate=3e-3, warmup_steps=5))
    config.rl.update(dict(steps=60, max_new_tokens=24, prompts_per_step=8, group_size=8, temperature=1.0, learning_rate=5e-4))
    config.eval.num_examples = 128
    config.method.loop = "score"  # the recipe (jaxrl_self/recipes/__init__.py); its options and their
    # defaults, set here with config.method.<option> = value to change one: jaxrl_self/recipes/score.py (SCoRe.config_defaults)
    return config
