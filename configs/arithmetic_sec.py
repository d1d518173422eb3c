"""Mixed 1- to 5-digit addition with SEC, the Self-Evolving Curriculum (docs/curricula.md).

    jaxrl-self train --config configs/arithmetic_sec.py --workdir runs/arithmetic_sec

configs/arithmetic_mixed_uniform.py with `curriculum.name = "sec"`: each prompt slot draws an
operand size from a softmax over per-category values, the moving averages (step size 0.5) of the
mean absolute advantage each category's groups had, at temperature 0.1 (the default 0.2 still
gave the solved 1-digit category 21% of the samples; 0.1 gives it 12% and trains the frontier
category harder: docs/results.md). Compare the two runs at
the same number of samples: `curriculum/zero_variance`, `curriculum/<k>-digit/share` and the
held-out `eval/<k>-digit/accuracy`.
"""
import pathlib

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(pathlib.Path(__file__).resolve().with_name("arithmetic_mixed_uniform.py"))
    config.curriculum.name = "sec"
    config.curriculum.step_size = 0.5
    config.curriculum.temperature = 0.1
    return config
