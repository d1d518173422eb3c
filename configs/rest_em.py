"""ReST-EM (docs/algorithms.md#star-and-rest-em) on 2-digit addition (a short CPU run) whose SFT demonstrations
drop the final carry digit half of the time.

After the SFT warm start, each iteration samples 8 completions for each of 256 training problems,
keeps the distinct verified-correct ones (at most 4 per problem) and fine-tunes the warm-started
(base) model on them; the demonstrations' mistake is filtered out by the verifier. Shares the task,
warm start and sampling settings of configs/star.py (the same loop, without rationalization).

    jaxrl-self train --config configs/rest_em.py
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(Path(__file__).with_name("star.py"))
    config.method.update(dict(
        loop="rest_em",  # jaxrl_self/recipes/__init__.py
        iterations=2,
        num_problems=256,  # the fixed pool of training problems sampled every iteration
        samples_per_prompt=8,
        max_per_problem=4,  # distinct verified-correct completions kept per problem
        rationalize=False,
        train_steps=150,  # M-step SFT steps (from the base model every iteration)
        steps_growth=1.0,
    ))
    return config
