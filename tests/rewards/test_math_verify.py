"""Normalisation and equivalence (ALGORITHMS.md 4.3)."""
import time

import pytest

from jaxrl_self.rewards.math_verify import (
    answers_equivalent,
    math_score,
    normalize_answer,
)


@pytest.mark.parametrize("raw, expected", [
    (r"\frac12", r"\frac{1}{2}"),
    (r"\dfrac{3}{4}", r"\frac{3}{4}"),
    (r" $x = 5$ ", "5"),
    ("1,000", "1000"),
    (r"10 \text{ cm}", "10"),
    (r"90^\circ", "90"),
    (r"50\%", "50"),
    (".5", "0.5"),
    (r"\left( 1, 2 \right)", "(1,2)"),
    ("7.", "7"),
    (r"\sqrt2", r"\sqrt{2}"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


@pytest.mark.parametrize("a, b", [
    (r"\frac12", "0.5"),
    (r"\dfrac{1}{2}", "1/2"),
    ("x = 5", "5"),
    ("1,000", "1000"),
    ("-0.75", r"-\frac{3}{4}"),
    ("(1, 2)", r"\left(1,2\right)"),
    (r"(1,\frac{1}{2}]", "(1, 0.5]"),
    (r"\sqrt{8}", r"2\sqrt{2}"),
    ("x^2+2x+1", "(x+1)^2"),
    (r"\frac{\pi}{2}", r"\pi/2"),
    ("12", "12"),
    ("1,234,567", "1234567"),
    ("1,000.5", "1000.5"),
    (r"10\,000", "10000"),
    ("3.50", "3.5"),
    ("-7", "-7.0"),
    (r"\frac{-1}{2}", "-0.5"),
    (r"-\dfrac{3}{2}", "-1.5"),
    ("0.125", r"\frac18"),
    ("2/4", "1/2"),
    (r"\$5", "5"),
    ("5 cm", "5"),
    (r"5 \text{ apples}", "5"),
    (r"6\ \mathrm{m}", "6"),
])
def test_equivalent_pairs(a, b):
    assert answers_equivalent(a, b)
    assert answers_equivalent(b, a)


@pytest.mark.parametrize("a, b", [
    ("3", "4"),
    (r"\frac{1}{3}", "0.33"),
    ("(1,2)", "[1,2)"),
    ("(1,2)", "(1,2,3)"),
    ("x+1", "x+2"),
    (r"\sqrt{8}", "3"),
    ("", "0"),
    (None, "1"),
    ("import os", "0"),
    ("-3", "3"),
    ("-0.5", "0.5"),
    ("12", "21"),
    ("1,000", "100"),
    ("1,234", "1.234"),
    (r"\frac{1}{2}", "0.55"),
    ("2/3", "0.67"),
    ("0.1", "0.10001"),
    ("5 cm", "6"),
    ("3.14", r"\pi"),
])
def test_non_equivalent_pairs(a, b):
    assert not answers_equivalent(a, b)


def test_pathological_input_times_out_as_false():
    started = time.monotonic()
    assert not answers_equivalent("2^{2^{2^{40}}}", "3", timeout=1.0)
    assert time.monotonic() - started < 5.0
    assert answers_equivalent("x^2-1", "(x-1)(x+1)")  # the worker was restarted and works again


@pytest.mark.parametrize("completion, reference, correct", [
    ("The answer is 42.", "42", 1.0),
    ("The answer is: -5 degrees", "-5", 1.0),
    (r"so the total is \boxed{1,000} dollars", "1000", 1.0),
    ("Natalia sold 48 clips in May.\n#### 72", "72", 1.0),
    (r"Thus \boxed{\dfrac{3}{4}}.", "0.75", 1.0),
    (r"\boxed{\$18}", "18", 1.0),
    ("The answer is 41.", "42", 0.0),
    (r"first \boxed{42}, no wait: \boxed{41}", "42", 0.0),
])
def test_text_around_the_answer(completion, reference, correct):
    assert math_score(completion, reference)["correct"] == correct


def test_math_score_components():
    assert math_score(r"so \boxed{\frac{1}{2}}", "0.5") == {"reward": 1.0, "correct": 1.0, "format_ok": 1.0}
    assert math_score(r"so \boxed{3}", "0.5") == {"reward": 0.0, "correct": 0.0, "format_ok": 1.0}
    assert math_score(r"so \boxed{3}", "0.5", format_score=0.1)["reward"] == 0.1
    assert math_score("I think 0.5", "0.5") == {"reward": 0.0, "correct": 0.0, "format_ok": 0.0}


def test_huge_inputs_are_cheap():
    started = time.monotonic()
    assert not answers_equivalent("1" * 100000, "2")
    assert not answers_equivalent(" cm" * 5000 + "x", "x")
    assert not answers_equivalent("(" * 300 + "x" + ")" * 300, "y")
    assert time.monotonic() - started < 3.0
