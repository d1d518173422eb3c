"""SPIRAL self-play (docs/games.md) on TicTacToe with a tiny char-level model from scratch.

The board shows each empty cell as its number ("Board: x1o|3x5|67o"), so a legal move is a digit
of the board. Warm start: SFT on uniformly random legal moves ("\\boxed{4}"). Then self-play with RAE baselines
(one per seat: the first mover is favoured). Reported after SFT and after RL: win / draw / loss
of the greedy policy against a perfect minimax player and a uniformly random one (half the games
in each seat), invalid-move rates, per-seat response lengths.

    jaxrl-self train --config configs/tictactoe.py --workdir /tmp/tictactoe
"""
from pathlib import Path

from jaxrl_self.config import load_config_file


def get_config():
    config = load_config_file(Path(__file__).with_name("kuhn_poker.py"))
    config.sft.steps = 150  # as measured (docs/games.md#results); configs/kuhn_poker.py warms up for 300
    config.task.max_prompt_len = 104  # rules, role and the first board, tokens incl. BOS
    config.model.max_position_embeddings = 256
    config.rl.update(dict(steps=40, max_new_tokens=12, learning_rate=5e-4, kl_coef=0.0))  # as measured (docs/games.md#results)
    config.eval.every = 40
    config.method.game = "tictactoe"
    config.method.decision_kl_coef = -1.0  # no KL here (rl.kl_coef = 0), so none on the move either
    config.method.eval_games = 32
    config.method.transcript_len = 136  # up to 5 moves (10 tokens each) and 4 boards (20) after the first
    return config
