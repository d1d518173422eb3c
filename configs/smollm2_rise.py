"""RISE (docs/algorithms.md#rise-generated-self-verification) on SmolLM2-135M-Instruct: configs/smollm2_grpo.py
(GRPO with the verifier on two-digit comparison word problems, where the model's greedy held-out
accuracy starts at 22%) plus, each step, 2 of its own solutions verified by a one-token verdict
(8 verdicts each) in the same batch. The verification is a second chat turn after the model's
reply ("Is your answer correct? Reply Yes or No.") and the verdicts are the model's own "Yes" and
"No" tokens, so it starts from what it makes of the question. Held-out
self-verification (AUROC, balanced accuracy, best-of-8, self-weighted vs plain maj@8) before and
after RL is in metrics.jsonl under eval/self_verify/.

    jaxrl-self train --config configs/smollm2_rise.py --workdir runs/smollm2_rise
"""
import pathlib

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(pathlib.Path(__file__).resolve().with_name("smollm2_grpo.py"))
    config.rl.rise.prompts = 2
    config.rl.rise.marker = "\n<|im_start|>user\nIs your answer correct? Reply Yes or No.<|im_end|>\n<|im_start|>assistant\n"
    config.rl.rise.yes = "Yes"
    config.rl.rise.no = "No"
    return config
