"""LaSeR (docs/algorithms.md#laser-last-token-self-reward) on the default arithmetic job: GRPO with the
verifier, and the policy learns to predict the verifier's verdict as the log-prob of a reserved token
after its answer, so it carries its own verifier (held-out AUROC, best-of-n and self-weighted votes
in metrics.jsonl under eval/self_verify/).

    jaxrl-self train --config configs/laser.py --workdir runs/laser

beta and c_ref are set for this model: after the default SFT warm start the reserved token's
log-prob is about -9.2, so c_ref = -9 and beta = 0.5 put the targets at -9 (wrong) and -7 (correct),
a probability below 1e-3 that does not disturb generation. alpha 0.3 over 200 RL steps separates
the self-scores more than 0.1 over the default 120 (held-out AUROC 0.60 -> 0.66 and 0.65 -> 0.69 on
seeds 0 and 1) with solving intact; alpha 1 costs solving (greedy 0.975 -> 0.835). The errors left
after RL are sampling slips in single column sums, which the 2-layer model barely learns to spot
from the EOS position (docs/results.md#self-verification-second-pass-what-stays-wrong-after-rl-and-a-ceiling-2026-12-06).
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).resolve().with_name("default.py"))


def get_config():
    config = _default_config()
    config.rl.steps = 200
    sv = config.rl.self_verify
    sv.coef = 0.3  # alpha
    sv.beta = 0.5
    sv.c_ref = -9.0
    sv.advantage_coef = 0.1  # lambda, after half the RL steps
    sv.advantage_warmup_steps = config.rl.steps // 2
    return config
