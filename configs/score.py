"""SCoRe (ALGORITHMS.md 3.9): two-attempt self-correction on the default job's task (addition whose
SFT demonstrations drop the final carry digit half of the time).

Warm start: SFT on the worked solutions for attempt 1 and on copying attempt 1 after the
`<retry>` marker for attempt 2. Stage I rewards attempt 2 while a strong KL holds attempt 1 at the
reference; stage II rewards both attempts with the shaped bonus alpha * (r2 - r1) on attempt 2.
Reported: held-out greedy accuracy at attempts 1 and 2, their difference, and the shares of
incorrect->correct and correct->incorrect, after SFT, stage I and stage II.

    jaxrl-self train --config configs/score.py
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def _default_config():
    return load_config_file(Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.task.digits = 2
    config.rl.update(dict(steps=60, max_new_tokens=32, prompts_per_step=8, group_size=8, learning_rate=5e-4))
    # prompts of attempt 2 hold the problem, attempt 1 and <retry>: max_prompt_len + 2 * max_new_tokens + 1 tokens in all
    config.model.max_position_embeddings = 96
    config.eval.num_examples = 128
    config.method.update(dict(
        loop="score",  # jaxrl_self/methods/loops.py
        stage1_steps=40,  # the first 40 of rl.steps are stage I, the rest stage II
        alpha=10.0,  # shaped bonus alpha * (r2 - r1) on attempt 2 in stage II
        beta1=0.01,  # KL to the reference on both attempts in stage II
        beta2=0.1,  # KL to the reference on attempt 1 in stage I
    ))
    return config
