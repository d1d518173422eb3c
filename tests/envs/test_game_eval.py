"""Exact Kuhn Poker evaluation against known values, and the TicTacToe reference players
(docs/games.md#evaluation)."""
from __future__ import annotations

import numpy as np
import pytest

from jaxrl_self.envs import TicTacToe, play
from jaxrl_self.envs.base import EVAL_INVALID_RETURNS
from jaxrl_self.envs.kuhn_poker import information_sets
from jaxrl_self.eval import games


def pure(bet_or_call):
    """A policy taking the aggressive action (Bet / Call) with probability bet_or_call(player, card, history)."""
    return {key: np.array([1.0 - bet_or_call(*key), bet_or_call(*key)]) for key, _ in information_sets()}


def nash(alpha):
    """The textbook equilibrium family (player 0's bluffing rate alpha in [0, 1/3])."""
    p = {(0, 0, ""): alpha, (0, 1, ""): 0.0, (0, 2, ""): 3 * alpha, (0, 0, "cb"): 0.0, (0, 1, "cb"): alpha + 1 / 3,
         (0, 2, "cb"): 1.0, (1, 0, "c"): 1 / 3, (1, 1, "c"): 0.0, (1, 2, "c"): 1.0, (1, 0, "b"): 0.0, (1, 1, "b"): 1 / 3,
         (1, 2, "b"): 1.0}
    return pure(lambda *key: p[key])


@pytest.mark.parametrize("policy, expected", [
    (games.UNIFORM_KUHN, 11 / 12),
    (pure(lambda p, c, h: 0.0), 2.0),  # always check / fold
    (pure(lambda p, c, h: 1.0), 2 / 3),  # always bet / call
    (pure(lambda p, c, h: float(c == 2)), 0.5),  # bet / call with the King only
])
def test_nash_conv_reference_values(policy, expected):
    assert games.nash_conv(policy) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 1 / 3])
def test_equilibrium_family_has_zero_nash_conv_and_game_value(alpha):
    policy = nash(alpha)
    assert games.nash_conv(policy) == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(games.expected_returns(policy, policy), [-1 / 18, 1 / 18], atol=1e-12)
    off = {**policy, (1, 1, "b"): np.array([0.0, 1.0])}  # player 1 always calls with the Queen: exploitable
    assert games.nash_conv(off) > 0.01


def test_value_against_random():
    assert games.value_against(games.UNIFORM_KUHN)["chips"] == pytest.approx(0.0, abs=1e-12)
    strong = games.value_against(nash(0.2))
    assert strong["chips"] > 0.1 and 0 < strong["win"] < 1
    weak = games.value_against(pure(lambda p, c, h: 0.0))  # always check / fold: folds every bet
    assert weak["chips"] < 0


def test_minimax_values_and_players():
    assert {v for _, v in games.minimax_values("." * 9, 0)} == {0}  # TicTacToe is a draw
    values = dict(games.minimax_values("xx.oo....", 0))
    assert values[2] == 1 and values[8] == -1  # x wins at 2; elsewhere o wins at 5
    env, rng = TicTacToe(), np.random.default_rng(0)
    seats = [g % 2 for g in range(40)]
    act = games.seat_act(games.minimax_act(rng), games.random_act(env, rng), seats)
    episodes = play(env, [env.reset(rng) for _ in range(40)], act, invalid_returns=EVAL_INVALID_RETURNS)
    rates = games.outcome_rates(episodes, seats)
    assert rates["loss"] == 0 and rates["win"] > 0.7 and rates["invalid"] == 0
    both = play(env, [env.reset(rng) for _ in range(10)], games.minimax_act(rng))
    assert all(e.returns == (0.0, 0.0) for e in both)
