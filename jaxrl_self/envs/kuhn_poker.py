"""Kuhn Poker, the textbook single hand (docs/games.md#kuhn-poker).

Deck J < Q < K, one card each, both ante 1 (pot 2). Player 0 acts first: [Check] or [Bet] (+1
chip). After a check player 1 may [Check] (showdown for the pot) or [Bet]; facing a bet a player
may [Fold] (losing its chips in the pot) or [Call] (+1 chip, showdown). Returns are the chip
differences: +-1 after check-check or a fold, +-2 after a called bet; the game's value for
player 0 is -1/18.

A state is `(cards, history)`: cards `(c0, c1)` in {0: J, 1: Q, 2: K}, history a string over
"c" (check), "b" (bet), "f" (fold), "k" (call). An information set is (player, card, history).
"""
from __future__ import annotations

import itertools

import numpy as np

from jaxrl_self.envs.base import Env, boxed

CARDS = "JQK"
DEALS = list(itertools.permutations(range(3), 2))  # the 6 deals, each with probability 1/6
MOVES = {"[Check]": "c", "[Bet]": "b", "[Fold]": "f", "[Call]": "k"}
NAMES = {v: k for k, v in MOVES.items()}
TERMINAL = ("cc", "bf", "bk", "cbf", "cbk")
# every decision point: history -> (acting player, its two actions: "passive" first)
DECISIONS = {"": (0, ("[Check]", "[Bet]")), "c": (1, ("[Check]", "[Bet]")), "b": (1, ("[Fold]", "[Call]")),
             "cb": (0, ("[Fold]", "[Call]"))}
RULES = "Kuhn Poker, J<Q<K, ante 1. Reply \\boxed{Move}."  # the full rules: module docstring, docs/games.md
SAID = {"c": "checks", "b": "bets", "f": "folds", "k": "calls"}
# the word an answer starts with: one first letter per move (Check and Call would share "C", so a
# push towards calling would be a push towards checking at the other information sets)
CALLS = {"[Check]": "Pass", "[Bet]": "Bet", "[Fold]": "Fold", "[Call]": "Call"}


def chip_returns(cards, history: str) -> tuple[float, float]:
    """(R_0, R_1) in chips at a terminal `history`."""
    if history.endswith("f"):  # the player who folds is the one to act before the fold
        folder = (len(history) - 1) % 2
        return (-1.0, 1.0) if folder == 0 else (1.0, -1.0)
    stake = 2.0 if "b" in history else 1.0
    return (stake, -stake) if cards[0] > cards[1] else (-stake, stake)


class KuhnPoker(Env):
    """Textbook Kuhn Poker (module docstring)."""

    name = "kuhn_poker"
    num_players = 2

    def reset(self, rng: np.random.Generator):
        return DEALS[int(rng.integers(len(DEALS)))], ""

    def current_player(self, state) -> int:
        return DECISIONS[state[1]][0]

    def legal_actions(self, state) -> list[str]:
        return list(DECISIONS[state[1]][1])

    def step(self, state, action: str):
        cards, history = state
        history = history + MOVES[action]
        return (cards, history), history in TERMINAL

    def returns(self, state):
        return chip_returns(*state)

    def demonstration(self, state, action: str) -> str:
        """"Bet \\boxed{Bet}", "Pass \\boxed{Check}": the move called out first, by a word whose first
        letter is its own (`CALLS`), then boxed. That first token, the one that chooses the move, is
        predicted at the observation's last token, the player's card (docs/games.md#kuhn-poker)."""
        return f"{CALLS[action]} {boxed(action)}"

    def observation(self, state, player: int) -> str:
        cards, history = state
        # the opponent's moves since this player's last turn (all moves at its first turn)
        seen = history[len(history) - 1 :] if len(history) >= 2 else history
        news = "".join(f" Player {1 - player} {SAID[m]}." for m in seen)
        # the card is the last token, the one at which the answer's first token (the move) is chosen
        now = f"Legal: {' '.join(self.legal_actions(state))}. Card: {CARDS[cards[player]]}"
        if len(history) < 2:  # first turn of this player
            return f"{RULES}\nYou are Player {player}.{news} {now}"
        return f"\n{news.strip()} {now}"


def information_sets():
    """The 12 information sets `(player, card, history)`, with their two actions."""
    return [((DECISIONS[h][0], card, h), DECISIONS[h][1]) for h in DECISIONS for card in range(3)]
