"""Multi-turn environments on the host: the interface and driver (`base`), two-player zero-sum games
(Kuhn Poker, TicTacToe, a negotiation) and single-player tool / retry environments (docs/games.md)."""
from __future__ import annotations

from jaxrl_self.envs.base import Env, Episode, Piece, Request, boxed, parse_action, play
from jaxrl_self.envs.kuhn_poker import KuhnPoker
from jaxrl_self.envs.negotiation import Negotiation
from jaxrl_self.envs.tictactoe import TicTacToe
from jaxrl_self.envs.tools import CalculatorEnv, RetryEnv

GAMES = {"kuhn_poker": KuhnPoker, "tictactoe": TicTacToe, "negotiation": Negotiation}

__all__ = ["Env", "Episode", "Piece", "Request", "boxed", "parse_action", "play", "GAMES", "KuhnPoker", "TicTacToe",
           "Negotiation", "CalculatorEnv", "RetryEnv"]
