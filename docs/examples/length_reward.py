"""A reward of your own (docs/rewards.md): the right answer, and the shorter the better.

Name it in a config as `config.rl.reward = "length_reward:reward"` with this directory on PYTHONPATH.
"""
import re


def reward(completions, prompts, references):
    """1 - len(completion) / 100 for a completion whose last <answer> is the reference, else 0."""
    answers = [re.findall(r"<answer>\s*(-?\d+)\s*</answer>", completion) for completion in completions]
    return [1.0 - len(completion) / 100 if found and int(found[-1]) == int(reference) else 0.0
            for completion, found, reference in zip(completions, answers, references)]
