"""Countdown verifier (docs/algorithms.md#procedural-tasks-countdown-and-arithmetic)."""
from fractions import Fraction

import pytest

from jaxrl_self.rewards.countdown import (
    countdown_reference,
    countdown_verifier,
    evaluate_countdown_expression,
    parse_countdown_reference,
    score_countdown,
)


@pytest.mark.parametrize("completion, reward, correct, format_ok", [
    ("<answer>(3+5)*2</answer>", 1.0, 1.0, 1.0),
    ("<answer>3*5+2</answer>", 0.1, 0.0, 1.0),
    ("<answer>8*2</answer>", 0.1, 0.0, 1.0),
    ("(3+5)*2", 0.0, 0.0, 0.0),
    ("<think>try</think> <answer> 2 * (5 + 3) </answer>", 1.0, 1.0, 1.0),
    ("<answer>(3+5)*2 = 16</answer>", 0.1, 0.0, 1.0),
    ("<answer>(3+5)*2*2</answer>", 0.1, 0.0, 1.0),
    ("<answer>__import__('os')</answer>", 0.1, 0.0, 1.0),
])
def test_worked_examples(completion, reward, correct, format_ok):
    assert score_countdown(completion, [3, 5, 2], 16) == {
        "reward": reward, "correct": correct, "format_ok": format_ok}


def test_exact_fractions_and_division_by_zero():
    assert evaluate_countdown_expression("(1/3)*6", [1, 3, 6]) == Fraction(2)
    assert evaluate_countdown_expression("6/(3-3)", [6, 3, 3]) is None
    assert evaluate_countdown_expression("-3+5", [3, 5]) == 2
    assert evaluate_countdown_expression("((3)+(5)", [3, 5]) is None
    assert evaluate_countdown_expression("(" * 2000 + "3" + ")" * 2000, [3]) is None
    assert score_countdown("<answer>7/2*4-6</answer>", [7, 2, 4, 6], 8)["correct"] == 1.0


def test_reference_round_trip_and_verifier():
    reference = countdown_reference([3, 5, 2], 16)
    assert reference == "3,5,2=16"
    assert parse_countdown_reference(reference) == ([3, 5, 2], 16)
    assert countdown_verifier("<answer>(3+5)*2</answer>", reference)["reward"] == 1.0
    with pytest.raises(ValueError, match="malformed"):
        parse_countdown_reference("3,5,2")
