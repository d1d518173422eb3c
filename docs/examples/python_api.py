"""jaxrl_self from Python: load a config, change it, train a few steps, sample from the result.

Run it as `python docs/examples/python_api.py [WORKDIR]` (about a minute on a laptop CPU).
"""
import sys

from jaxrl_self.config import load_config_file, validate
from jaxrl_self.recipes import train_and_evaluate
from jaxrl_self.recipes.runs import sample_run


def main(workdir: str = "runs/python_api") -> None:
    config = load_config_file("configs/default.py")  # validated: a typo in a key is an error
    config.task.digits = 1  # one-digit additions, a tiny model and a few steps
    config.model.update(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, intermediate_size=64)
    config.sft.steps, config.rl.steps = 20, 4
    config.rl.update(prompts_per_step=4, group_size=4, max_new_tokens=16)
    config.eval.num_examples = 16
    validate(config)  # the same checks as the command line, after the changes
    summary = train_and_evaluate(config, workdir)  # SFT warm start, GRPO, checkpoints, report.md
    print(summary["held-out greedy accuracy"])  # {"after SFT": ..., "after RL": ...}
    for completion in sample_run(workdir, ["3+4="], num_samples=2, temperature=1.0)[0]:
        print("3+4=", completion)


if __name__ == "__main__":
    main(*sys.argv[1:])
