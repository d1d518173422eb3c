"""Single-player clients of the environment interface: a calculator tool and "try again" feedback
(docs/games.md#tool-and-retry-environments).

CalculatorEnv: compute `a*b+c`; the policy may call the tool with "\\boxed{calc EXPR}" (digits and
+ - * only), whose value comes back as the next observation, and ends with "\\boxed{answer N}":
return 1 when N is right, else 0. At most `max_calls` tool calls.

RetryEnv: answer `a+b` with "\\boxed{N}"; a wrong answer gets "Wrong, try again." until
`max_attempts` answers: return 1 when an answer is right, else 0.
"""
from __future__ import annotations

import re

import numpy as np

from jaxrl_self.envs.base import Env

EXPRESSION = re.compile(r"\d{1,6}(?:[+*-]\d{1,6}){0,4}")
NUMBER = re.compile(r"-?\d{1,12}")


def calculate(expression: str) -> int:
    """The value of `expression` (digits and + - *, at most 5 numbers), by Python's precedence."""
    if not EXPRESSION.fullmatch(expression):
        raise ValueError(f"not a calculator expression: {expression!r}")
    terms = re.split(r"([+-])", expression)
    total, sign = 0, 1
    for term in terms:
        if term in "+-":
            sign = 1 if term == "+" else -1
            continue
        total += sign * int(np.prod([int(x) for x in term.split("*")], dtype=object))
    return total


class CalculatorEnv(Env):
    """The calculator tool environment (module docstring). A state is a dict: problem (a, b, c),
    calls made, last tool result (or None), answer (or None)."""

    name = "calculator"
    num_players = 1

    def __init__(self, max_calls: int = 3):
        self.max_calls = max_calls

    def reset(self, rng: np.random.Generator):
        a, b, c = (int(x) for x in rng.integers(10, 100, size=3))
        return dict(problem=(a, b, c), calls=0, result=None, answer=None)

    def current_player(self, state) -> int:
        return 0

    def legal_actions(self, state) -> list[str]:
        """Templates: the actions are not enumerable."""
        return (["[calc EXPR]"] if state["calls"] < self.max_calls else []) + ["[answer N]"]

    def is_legal(self, state, action: str) -> bool:
        if action.startswith("[calc ") and state["calls"] < self.max_calls:
            return bool(EXPRESSION.fullmatch(action[6:-1]))
        return action.startswith("[answer ") and bool(NUMBER.fullmatch(action[8:-1]))

    def step(self, state, action: str):
        state = dict(state)
        if action.startswith("[calc "):
            state.update(calls=state["calls"] + 1, result=calculate(action[6:-1]))
            return state, False
        state["answer"] = int(action[8:-1])
        return state, True

    def returns(self, state):
        a, b, c = state["problem"]
        return (float(state["answer"] == a * b + c),)

    def observation(self, state, player: int) -> str:
        if state["calls"] == 0:
            a, b, c = state["problem"]
            return (f"Compute {a}*{b}+{c}. Call the calculator with \\boxed{{calc EXPR}}; "
                    f"give the result with \\boxed{{answer N}}.\n")
        return f"\nCalculator: {state['result']}\n"


class RetryEnv(Env):
    """The "try again" environment (module docstring). A state is a dict: problem (a, b),
    attempts made, solved."""

    name = "retry"
    num_players = 1

    def __init__(self, max_attempts: int = 3):
        self.max_attempts = max_attempts

    def reset(self, rng: np.random.Generator):
        a, b = (int(x) for x in rng.integers(0, 100, size=2))
        return dict(problem=(a, b), attempts=0, solved=False)

    def current_player(self, state) -> int:
        return 0

    def legal_actions(self, state) -> list[str]:
        return ["[N]"]

    def is_legal(self, state, action: str) -> bool:
        return bool(NUMBER.fullmatch(action[1:-1]))

    def step(self, state, action: str):
        a, b = state["problem"]
        solved = int(action[1:-1]) == a + b
        state = dict(state, attempts=state["attempts"] + 1, solved=solved)
        return state, solved or state["attempts"] >= self.max_attempts

    def returns(self, state):
        return (float(state["solved"]),)

    def observation(self, state, player: int) -> str:
        if state["attempts"] == 0:
            a, b = state["problem"]
            return f"Compute {a}+{b}. Answer \\boxed{{N}}.\n"
        return "\nWrong, try again.\n"
