"""Countdown verifier (docs/algorithms.md#procedural-tasks-countdown-and-arithmetic, TinyZero scoring).

The answer is the last ``<answer>...</answer>``. It must contain only digits, ``+ - * /``,
parentheses and spaces; its integer literals must be exactly the given numbers (as a multiset);
it is evaluated by the recursive-descent parser below over exact ``Fraction`` values. Scores:
1.0 correct, 0.1 answer extracted but invalid or wrong, 0.0 no answer.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction

from jaxrl_self.rewards.answers import extract_tagged

CORRECT_SCORE = 1.0
FORMAT_SCORE = 0.1
_ALLOWED_EXPRESSION = re.compile(r"[\d+\-*/()\s]+")
_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")


class _ExpressionParser:
    """expression := term (('+'|'-') term)*; term := factor (('*'|'/') factor)*;
    factor := ('+'|'-') factor | integer | '(' expression ')'. Raises ValueError when invalid."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.position = tokens, 0

    def peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise ValueError("unexpected end of expression")
        self.position += 1
        return token

    def parse(self) -> Fraction:
        value = self.expression()
        if self.peek() is not None:
            raise ValueError(f"unexpected token {self.peek()!r}")
        return value

    def expression(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self.peek() in ("*", "/"):
            operator, operand = self.take(), self.factor()
            if operator == "*":
                value *= operand
            elif operand == 0:
                raise ValueError("division by zero")
            else:
                value /= operand
        return value

    def factor(self) -> Fraction:
        token = self.take()
        if token == "-":
            return -self.factor()
        if token == "+":
            return self.factor()
        if token == "(":
            value = self.expression()
            if self.take() != ")":
                raise ValueError("missing ')'")
            return value
        if token.isdigit():
            return Fraction(int(token))
        raise ValueError(f"unexpected token {token!r}")


def evaluate_countdown_expression(expression: str, numbers: Sequence[int]) -> Fraction | None:
    """Exact value of ``expression`` if it is valid for ``numbers``, else None.

    Valid means: only allowed characters, the integer literals are exactly ``numbers`` (as a
    multiset), it parses, and no division by zero happens.
    """
    if not _ALLOWED_EXPRESSION.fullmatch(expression):
        return None
    literals = [int(literal) for literal in re.findall(r"\d+", expression)]
    if Counter(literals) != Counter(int(n) for n in numbers):
        return None
    tokens = _TOKEN.findall(expression)
    try:
        return _ExpressionParser(tokens).parse()
    except (ValueError, RecursionError):
        return None


def score_countdown(completion: str, numbers: Sequence[int], target: int) -> dict[str, float]:
    """Score one countdown completion.

    Returns:
      ``{"reward": 1.0 | 0.1 | 0.0, "correct": 0/1, "format_ok": 0/1}`` where ``format_ok`` means
      an ``<answer>`` span was found.
    """
    answer = extract_tagged(completion, "answer")
    if answer is None:
        return {"reward": 0.0, "correct": 0.0, "format_ok": 0.0}
    value = evaluate_countdown_expression(answer, numbers)
    correct = value is not None and value == target
    return {"reward": CORRECT_SCORE if correct else FORMAT_SCORE, "correct": float(correct),
            "format_ok": 1.0}


def countdown_reference(numbers: Sequence[int], target: int) -> str:
    """Compact reference string for an instance, e.g. ``([3, 5, 2], 16) -> "3,5,2=16"``."""
    return ",".join(str(int(n)) for n in numbers) + f"={int(target)}"


def parse_countdown_reference(reference: str) -> tuple[list[int], int]:
    """Inverse of ``countdown_reference``: ``"3,5,2=16" -> ([3, 5, 2], 16)``; ValueError if malformed."""
    match = re.fullmatch(r"\s*(-?\d+(?:\s*,\s*-?\d+)*)\s*=\s*(-?\d+)\s*", reference)
    if match is None:
        raise ValueError(f"malformed countdown reference {reference!r}; expected like '3,5,2=16'")
    return [int(n) for n in match.group(1).split(",")], int(match.group(2))


def countdown_verifier(completion: str, reference: str) -> dict[str, float]:
    """Verifier interface for ``host.make_host_reward_fn``: reference is ``countdown_reference(...)``."""
    numbers, target = parse_countdown_reference(reference)
    return score_countdown(completion, numbers, target)
