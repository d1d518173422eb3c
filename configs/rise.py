"""RISE (docs/algorithms.md#rise-generated-self-verification) on the default arithmetic job: GRPO with the
verifier, and in the same batch the policy verifies 8 of each step's own solutions with a one-token
verdict, rewarded against the verifier's label. With 16 the step's gradient norm averaged 3.5 over
the last 20 steps (8: 1.4) against the clip of 1.0, which shrank the solve rows' update with it, and
solving ended 12 points behind GRPO on the same vocabulary (8: within 2). The context is
`problem + solution + <verify>` and the verdicts `<yes>` and `<no>`, three reserved tokens added to
the task's alphabet (the task's own characters would not do: training "=" -> "1"/"0" as a verdict
also rewrites how the model adds, and held-out accuracy fell from 0.745 to 0.25 in 20 steps). It
ends up with its own verifier: held-out balanced accuracy, AUROC, best-of-n and self-weighted votes
in metrics.jsonl under eval/self_verify/, and in `jaxrl-self eval --num-samples 8`.

    jaxrl-self train --config configs/rise.py --workdir runs/rise
"""
import pathlib

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))
    config.rl.rise.prompts = 8
    return config
