"""A simple two-player negotiation (docs/games.md#negotiation).

A pool of three item kinds A, B, C (1 or 2 of each) is to be split. Each player values the kinds
privately (0-3 points each, not all 0). Players alternate, player 0 first: "[Propose a b c]" (the
proposer keeps a, b, c and the other gets the rest) or, after an offer, "[Accept]" (the deal is
the standing offer). Zero-sum result: the player whose share is worth the larger fraction of its
value of the whole pool wins (+1, the other -1), equal fractions draw; no deal after `max_offers`
proposals is a draw.

A state is a dict: counts `(3,)`, values `((3,), (3,))`, offer `(proposer, kept)` or None,
offers made, player to move, deal `(share_0, share_1)` or None.
"""
from __future__ import annotations

import itertools

import numpy as np

from jaxrl_self.envs.base import Env

KINDS = "ABC"
RULES = ("Split the items: \\boxed{Propose a b c} keeps a b c, \\boxed{Accept} takes the offer; "
         "the larger share of one's own value wins.")


def items_text(counts) -> str:
    return " ".join(f"{k}{n}" for k, n in zip(KINDS, counts))


class Negotiation(Env):
    """The negotiation game (module docstring)."""

    name = "negotiation"
    num_players = 2

    def __init__(self, max_offers: int = 4):
        self.max_offers = max_offers

    def reset(self, rng: np.random.Generator):
        counts = tuple(int(c) for c in rng.integers(1, 3, size=3))
        values = []
        for _ in range(2):
            v = rng.integers(0, 4, size=3)
            while not np.any(v * counts):
                v = rng.integers(0, 4, size=3)
            values.append(tuple(int(x) for x in v))
        return dict(counts=counts, values=tuple(values), offer=None, offers=0, to_move=0, deal=None)

    def current_player(self, state) -> int:
        return state["to_move"]

    def legal_actions(self, state) -> list[str]:
        proposals = [f"[Propose {a} {b} {c}]" for a, b, c in itertools.product(*(range(n + 1) for n in state["counts"]))]
        return (["[Accept]"] if state["offer"] is not None else []) + proposals

    def step(self, state, action: str):
        state = dict(state)
        player = state["to_move"]
        if action == "[Accept]":
            proposer, kept = state["offer"]
            rest = tuple(n - k for n, k in zip(state["counts"], kept))
            state["deal"] = (kept, rest) if proposer == 0 else (rest, kept)
            return state, True
        kept = tuple(int(x) for x in action[len("[Propose ") : -1].split())
        state.update(offer=(player, kept), offers=state["offers"] + 1, to_move=1 - player)
        return state, state["offers"] > self.max_offers  # a proposal after the last allowed one: no deal

    def returns(self, state):
        if state["deal"] is None:
            return 0.0, 0.0
        gains = [np.dot(share, v) / np.dot(state["counts"], v) for share, v in zip(state["deal"], state["values"])]
        if gains[0] == gains[1]:
            return 0.0, 0.0
        return (1.0, -1.0) if gains[0] > gains[1] else (-1.0, 1.0)

    def observation(self, state, player: int) -> str:
        offer = state["offer"]
        news = ""
        if offer is not None:
            kept = offer[1]
            news = f" Player {offer[0]} keeps {items_text(kept)}, you get {items_text(np.subtract(state['counts'], kept))}."
        if state["offers"] <= 1:  # this player's first turn
            return (f"{RULES}\nYou are Player {player}. Items: {items_text(state['counts'])}. "
                    f"Your values: {items_text(state['values'][player])}.{news}\n")
        return f"\n{news.strip()}\n"
