"""Exact evaluation of game policies (docs/games.md#evaluation).

Kuhn Poker: a policy is `{(player, card, history): [p_passive, p_aggressive]}` over the 12
information sets of `envs.kuhn_poker.information_sets` (probabilities of the two legal actions in
`DECISIONS[history]` order). `nash_conv` enumerates the 6 deals and each player's 4 pure
strategies per card; `value_against` gives a policy's exact expected chips and win probability
against another, averaged over both seats.

TicTacToe: `minimax_act` (perfect play, ties broken at random) and `random_act` players for
`envs.base.play`, and `outcome_rates` of a policy's games against them.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

from jaxrl_self.envs.base import Piece, boxed
from jaxrl_self.envs.kuhn_poker import DEALS, DECISIONS, MOVES, TERMINAL, chip_returns, information_sets
from jaxrl_self.envs.tictactoe import MARKS, winner

UNIFORM_KUHN = {key: np.array([0.5, 0.5]) for key, _ in information_sets()}


def kuhn_outcomes(policies, deal):
    """[(probability, (R_0, R_1), history)] of the terminal histories of `deal` when player p
    plays `policies[p]` (a Kuhn policy, module docstring)."""
    outcomes = []

    def walk(history, prob):
        if history in TERMINAL:
            outcomes.append((prob, chip_returns(deal, history), history))
            return
        player, actions = DECISIONS[history]
        probs = policies[player][(player, deal[player], history)]
        for action, p in zip(actions, probs):
            if p > 0:
                walk(history + MOVES[action], prob * p)

    walk("", 1.0)
    return outcomes


def expected_returns(policy0, policy1) -> np.ndarray:
    """(u_0, u_1): expected chips when player 0 plays `policy0` and player 1 `policy1`."""
    total = np.zeros(2)
    for deal in DEALS:
        for prob, returns, _ in kuhn_outcomes((policy0, policy1), deal):
            total += prob * np.asarray(returns) / len(DEALS)
    return total


def pure_strategies(player: int):
    """Player `player`'s pure strategies for one card: {history: action index} over its 2 decision points."""
    histories = [h for h, (p, _) in DECISIONS.items() if p == player]
    return [dict(zip(histories, choice)) for choice in itertools.product((0, 1), repeat=len(histories))]


def best_response_value(policy, player: int) -> float:
    """max over `player`'s strategies of its expected chips against `policy` in the other seat."""
    value = 0.0
    for card in range(3):
        best = -np.inf
        for pure in pure_strategies(player):
            responder = dict(policy)
            responder.update({(player, card, h): np.eye(2)[a] for h, a in pure.items()})
            seats = (responder, policy) if player == 0 else (policy, responder)
            total = 0.0
            for deal in DEALS:
                if deal[player] == card:
                    total += sum(prob * returns[player] for prob, returns, _ in kuhn_outcomes(seats, deal)) / len(DEALS)
            best = max(best, total)
        value += best
    return value


def nash_conv(policy) -> float:
    """max_{s0} u_0(s0, policy) + max_{s1} u_1(policy, s1): 0 exactly at a Nash equilibrium.
    One policy plays both seats (the self-play case)."""
    return best_response_value(policy, 0) + best_response_value(policy, 1)


def value_against(policy, opponent=UNIFORM_KUHN) -> dict:
    """`policy`'s expected chips and win / loss probabilities against `opponent`, averaged over
    the two seats: {"chips", "win", "loss"} (Kuhn Poker has no draws)."""
    chips = win = 0.0
    for seat in range(2):
        seats = (policy, opponent) if seat == 0 else (opponent, policy)
        for deal in DEALS:
            for prob, returns, _ in kuhn_outcomes(seats, deal):
                chips += prob * returns[seat] / (2 * len(DEALS))
                win += prob * (returns[seat] > 0) / (2 * len(DEALS))
    return {"chips": chips, "win": win, "loss": 1.0 - win}


@functools.lru_cache(maxsize=None)
def minimax_values(board: str, player: int) -> tuple:
    """Negamax values for `player` to move on `board` of each empty cell: +1 win, 0 draw, -1 loss."""
    values = []
    for cell in range(9):
        if board[cell] != ".":
            continue
        after = board[:cell] + MARKS[player] + board[cell + 1 :]
        if winner(after) is not None:
            values.append((cell, 1))
        elif "." not in after:
            values.append((cell, 0))
        else:
            values.append((cell, -max(v for _, v in minimax_values(after, 1 - player))))
    return tuple(values)


def minimax_act(rng: np.random.Generator):
    """A perfect TicTacToe player for `envs.base.play`, breaking ties between equally good cells at random."""
    def act(requests):
        responses = []
        for r in requests:
            values = minimax_values(*r.state)
            best = max(v for _, v in values)
            cell = rng.choice([c for c, v in values if v == best])
            responses.append(Piece(boxed(f"[{cell}]"), by_policy=True))
        return responses
    return act


def random_act(env, rng: np.random.Generator):
    """A uniformly random legal player for `envs.base.play`."""
    def act(requests):
        return [Piece(env.demonstration(r.state, str(rng.choice(env.legal_actions(r.state)))), by_policy=True)
                for r in requests]
    return act


def seat_act(policy_act, opponent_act, seat_of_game):
    """One `act` for `envs.base.play` in which game g's player `seat_of_game[g]` is `policy_act`
    and the other seat `opponent_act` (each called once per turn, when it has requests)."""
    def act(requests):
        ours = [i for i, r in enumerate(requests) if r.player == seat_of_game[r.game]]
        theirs = [i for i, r in enumerate(requests) if r.player != seat_of_game[r.game]]
        responses = [None] * len(requests)
        for indices, fn in ((ours, policy_act), (theirs, opponent_act)):
            if indices:
                for i, response in zip(indices, fn([requests[i] for i in indices])):
                    responses[i] = response
        return responses
    return act


def outcome_rates(episodes, seat_of_game) -> dict:
    """Win / draw / loss rates of the seat `seat_of_game[g]` over `episodes`, and the share of its
    turns that were invalid ("invalid": games it forfeited by an invalid response)."""
    results = np.array([e.returns[seat_of_game[g]] for g, e in enumerate(episodes)])
    forfeits = np.array([e.invalid_player == seat_of_game[g] for g, e in enumerate(episodes)])
    return {"win": float(np.mean(results > 0)), "draw": float(np.mean(results == 0)), "loss": float(np.mean(results < 0)),
            "invalid": float(np.mean(forfeits))}
