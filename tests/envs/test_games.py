"""Rules and returns of each environment, and the batched driver's handling of invalid responses,
turn limits and contexts that no longer fit (docs/games.md)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from jaxrl_self.envs import CalculatorEnv, KuhnPoker, Negotiation, Piece, RetryEnv, TicTacToe, boxed, parse_action, play
from jaxrl_self.envs.base import EVAL_INVALID_RETURNS, completion_order, random_legal_act
from jaxrl_self.envs.tools import calculate


def scripted(responses):
    """An `act` answering the k-th request of each game with `responses[k]` (texts)."""
    counts = {}

    def act(requests):
        out = []
        for r in requests:
            k = counts.get(r.game, 0)
            counts[r.game] = k + 1
            out.append(Piece(responses[k], by_policy=True))
        return out
    return act


def test_parse_action_takes_the_last_box():
    assert parse_action("I think \\boxed{Check} no, \\boxed{ Bet }") == "[Bet]"
    assert parse_action("Bet") is None
    assert boxed("[Call]") == "\\boxed{Call}"


@pytest.mark.parametrize("cards, moves, returns", [
    ((2, 0), ["[Check]", "[Check]"], (1.0, -1.0)),
    ((0, 1), ["[Check]", "[Check]"], (-1.0, 1.0)),
    ((0, 2), ["[Bet]", "[Call]"], (-2.0, 2.0)),
    ((2, 1), ["[Bet]", "[Call]"], (2.0, -2.0)),
    ((0, 2), ["[Bet]", "[Fold]"], (1.0, -1.0)),
    ((1, 0), ["[Check]", "[Bet]", "[Fold]"], (-1.0, 1.0)),
    ((1, 0), ["[Check]", "[Bet]", "[Call]"], (2.0, -2.0)),
])
def test_kuhn_poker_textbook_payoffs(cards, moves, returns):
    env = KuhnPoker()
    state = (cards, "")
    for i, move in enumerate(moves):
        assert env.current_player(state) == i % 2
        assert move in env.legal_actions(state)
        state, done = env.step(state, move)
        assert done == (i == len(moves) - 1)
    assert env.returns(state) == returns


def test_kuhn_poker_legal_actions_and_observations():
    env = KuhnPoker()
    assert env.legal_actions(((0, 1), "")) == ["[Check]", "[Bet]"]
    assert env.legal_actions(((0, 1), "b")) == ["[Fold]", "[Call]"]
    assert env.legal_actions(((0, 1), "cb")) == ["[Fold]", "[Call]"]
    first = env.observation(((2, 0), "b"), 1)
    assert "You are Player 1" in first and "Card: J" in first and "Player 0 bets" in first and "K" not in first.split("\n")[1]
    later = env.observation(((2, 0), "cb"), 0)
    assert "Player 1 bets" in later and "You are" not in later
    # the card is the last token before the answer, whose first token calls the move out, a letter
    # of its own for each move (docs/games.md#kuhn-poker)
    assert first.endswith("Card: J") and later.endswith("Card: K")
    assert env.demonstration(((2, 0), "cb"), "[Call]") == "Call \\boxed{Call}"
    answers = [env.demonstration(((2, 0), ""), move) for move in ("[Check]", "[Bet]", "[Fold]", "[Call]")]
    assert answers[0] == "Pass \\boxed{Check}" and len({answer[0] for answer in answers}) == 4
    deals = {env.reset(np.random.default_rng(s))[0] for s in range(200)}
    assert deals == {(a, b) for a in range(3) for b in range(3) if a != b}


def test_tictactoe_rules():
    env = TicTacToe()
    state = env.reset(np.random.default_rng(0))
    for i, cell in enumerate([0, 3, 1, 4]):
        state, done = env.step(state, f"[{cell}]")
        assert not done
    assert "[0]" not in env.legal_actions(state) and len(env.legal_actions(state)) == 5
    state, done = env.step(state, "[2]")
    assert done and env.returns(state) == (1.0, -1.0)
    state = env.reset(None)
    for cell in [0, 1, 2, 4, 3, 5, 7, 6, 8]:  # x o x / x o o / o x x: a full board without a line
        state, done = env.step(state, f"[{cell}]")
    assert done and env.returns(state) == (0.0, 0.0)
    state = ("xx.oo....", 1)
    state, done = env.step(state, "[5]")
    assert done and env.returns(state) == (-1.0, 1.0)


def test_tictactoe_board_numbers_the_free_cells():
    """The board shows each empty cell as its number: the digits of the board are the legal moves."""
    env = TicTacToe()
    assert "Board: 012|345|678" in env.observation(env.reset(None), 0)
    state = ("x.o.x...o", 1)
    board = re.search(r"Board: (\S+)", env.observation(state, 1)).group(1)
    assert board == "x1o|3x5|67o"
    assert sorted(f"[{c}]" for c in board if c.isdigit()) == env.legal_actions(state)


def test_negotiation_deal_and_no_deal():
    env = Negotiation(max_offers=2)
    state = dict(counts=(2, 1, 1), values=((3, 0, 1), (0, 2, 2)), offer=None, offers=0, to_move=0, deal=None)
    assert "[Accept]" not in env.legal_actions(state) and len(env.legal_actions(state)) == 3 * 2 * 2
    state, done = env.step(state, "[Propose 2 0 0]")  # player 0 keeps both A (6/7 of its value)
    assert not done and "[Accept]" in env.legal_actions(state) and env.current_player(state) == 1
    assert "Player 0 keeps A2 B0 C0, you get A0 B1 C1" in env.observation(state, 1)
    accepted, done = env.step(state, "[Accept]")
    assert done and accepted["deal"] == ((2, 0, 0), (0, 1, 1))
    assert env.returns(accepted) == (-1.0, 1.0)  # player 1 gets all of its value, player 0 6/7 of its own
    state, done = env.step(state, "[Propose 0 1 1]")
    assert not done
    state, done = env.step(state, "[Propose 2 1 1]")  # a third proposal: no deal
    assert done and env.returns(state) == (0.0, 0.0)


def test_calculator_and_retry_environments_through_the_driver():
    assert calculate("12*3+4-2*2") == 36
    with pytest.raises(ValueError):
        calculate("__import__('os')")
    env = CalculatorEnv()
    state = dict(problem=(12, 34, 56), calls=0, result=None, answer=None)
    [solved, wrong] = play(env, [state, state], scripted(["\\boxed{calc 12*34}", "\\boxed{answer 464}"]),
                           max_turns=5)
    assert solved.returns == (1.0,) and solved.contexts[0][2].text == "\nCalculator: 408\n"
    [bad] = play(env, [state], scripted(["\\boxed{calc 1/0}"]))
    assert bad.invalid_player == 0 and bad.returns == (-1.5,)
    env = RetryEnv(max_attempts=3)
    start = dict(problem=(20, 22), attempts=0, solved=False)
    [second] = play(env, [start], scripted(["\\boxed{41}", "\\boxed{42}"]))
    assert second.returns == (1.0,) and "Wrong, try again" in second.contexts[0][2].text
    [never] = play(env, [start], scripted(["\\boxed{1}"] * 3))
    assert never.returns == (0.0,) and len(never.actions) == 3


def test_driver_invalid_response_turn_limit_and_fit():
    env = KuhnPoker()
    start = ((2, 0), "")
    [invalid] = play(env, [start], scripted(["\\boxed{Check}", "\\boxed{Raise}"]))
    assert invalid.invalid_player == 1 and invalid.returns == (0.5, -1.5)
    [forfeit] = play(env, [start], scripted(["no box"]), invalid_returns=EVAL_INVALID_RETURNS)
    assert forfeit.invalid_player == 0 and forfeit.returns == (-1.0, 1.0)
    [limited] = play(env, [start], scripted(["\\boxed{Check}", "\\boxed{Bet}"]), max_turns=2)
    assert limited.truncated and limited.returns == (0.0, 0.0)
    [cut] = play(env, [start], scripted(["\\boxed{Check}", "\\boxed{Bet}", "\\boxed{Call}"]),
                 fits=lambda context: len(context) < 3)  # player 0's second turn does not fit
    assert cut.truncated and cut.returns == (0.0, 0.0)
    # contexts: observations and responses alternate, each game's own
    [full] = play(env, [start], scripted(["\\boxed{Check}", "\\boxed{Bet}", "\\boxed{Call}"]))
    assert full.returns == (2.0, -2.0) and [p.by_policy for p in full.contexts[0]] == [False, True, False, True]
    assert [p.by_policy for p in full.contexts[1]] == [False, True]


def test_batched_random_games_and_completion_order():
    env, rng = TicTacToe(), np.random.default_rng(0)
    episodes = play(env, [env.reset(rng) for _ in range(50)], random_legal_act(env, rng))
    assert all(e.invalid_player is None and not e.truncated for e in episodes)
    assert all(sum(e.returns) == 0 for e in episodes)
    order = completion_order(episodes)
    ends = [episodes[g].end_turn for g in order]
    assert ends == sorted(ends) and sorted(order) == list(range(50)) and min(ends) >= 4
