"""SPIRAL self-play (docs/games.md) on the simple negotiation game with a tiny char-level model.

Warm start: SFT on uniformly random legal moves ("\\boxed{Propose 1 0 2}", "\\boxed{Accept}").
Reported after SFT and after RL: win / draw / loss of the greedy policy against a uniformly random
legal player, invalid-move rates, per-seat response lengths.

    jaxrl-self train --config configs/negotiation.py --workdir /tmp/negotiation
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(Path(__file__).with_name("kuhn_poker.py"))
    config.sft.steps = 150  # as measured (docs/games.md#results); configs/kuhn_poker.py warms up for 300
    config.task.max_prompt_len = 232  # rules, role, items, values and the first offer, tokens incl. BOS
    config.model.max_position_embeddings = 432
    config.rl.update(dict(steps=60, max_new_tokens=24, learning_rate=5e-4, kl_coef=0.0))  # as measured (docs/games.md#results)
    config.eval.every = 30
    config.method.game = "negotiation"
    config.method.decision_kl_coef = -1.0  # no KL here (rl.kl_coef = 0), so none on the move either
    config.method.transcript_len = 168  # up to 3 proposals (22 tokens each) and 2 offers (~46) after the first
    return config
