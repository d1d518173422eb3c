"""Countdown (docs/algorithms.md#procedural-tasks-countdown-and-arithmetic): reach a target with the given numbers, each used exactly once.

The generator builds a random expression tree over the sampled numbers and keeps instances whose
value is a positive integer <= max_target, so every instance is solvable; that expression is the
SFT solution. The verifier is `jaxrl_self.rewards.countdown.score_countdown` (exact Fractions).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from jaxrl_self.models.tokenizer import CharTokenizer
from jaxrl_self.rewards.countdown import countdown_reference, parse_countdown_reference, score_countdown
from jaxrl_self.tasks.base import Example
from jaxrl_self.tasks.procedural import ProceduralExamples

OPS = "+-*/"


def make_tokenizer() -> CharTokenizer:
    return CharTokenizer("0123456789+-*/()=, ", ("<think>", "</think>", "<answer>", "</answer>"))


def random_expression(numbers: list[int], rng: np.random.Generator) -> tuple[str, Fraction]:
    """A random full binary expression using every number once: (text, exact value)."""
    items = [(str(n), Fraction(n)) for n in numbers]
    while len(items) > 1:
        i, j = rng.choice(len(items), size=2, replace=False)
        (left, lv), (right, rv) = items[i], items[j]
        op = OPS[int(rng.integers(4))]
        if op == "/" and rv == 0:
            op = "+"
        value = {"+": lv + rv, "-": lv - rv, "*": lv * rv, "/": lv / rv if rv else lv}[op]
        items = [it for k, it in enumerate(items) if k not in (i, j)] + [(f"({left}{op}{right})", value)]
    text, value = items[0]
    return (text[1:-1] if text.startswith("(") and len(numbers) > 1 else text), value


class CountdownTask:
    name = "countdown"

    def __init__(self, num_numbers: int = 3, max_number: int = 20, max_target: int = 100, seed: int = 0, train_size: int = 100_000, test_size: int = 200):
        self.num_numbers, self.max_number, self.max_target, self.seed = num_numbers, max_number, max_target, seed
        self.sizes = {"train": train_size, "test": test_size}
        self.tokenizer = make_tokenizer()
        self.category_names = (f"{num_numbers} numbers",)  # one generator setting, one category

    def _draw(self, rng: np.random.Generator, category: int = 0):
        while True:
            numbers = [int(x) for x in rng.integers(1, self.max_number + 1, size=self.num_numbers)]
            text, value = random_expression(numbers, rng)
            if value.denominator == 1 and 0 < value <= self.max_target:
                break
        target = int(value)
        prompt = f"{','.join(map(str, numbers))}={target}"
        rephrasing = f"{','.join(map(str, reversed(numbers)))}={target}"
        return prompt, Example(prompt, countdown_reference(numbers, target), f"<answer>{text}</answer>", rephrasing=rephrasing)

    def examples(self, split: str) -> ProceduralExamples:
        return ProceduralExamples(self._draw, self.seed, split, self.sizes[split])

    def categories(self, split: str) -> np.ndarray:
        return self.examples(split).categories()

    def score(self, completion: str, reference: str) -> dict:
        numbers, target = parse_countdown_reference(reference)
        return score_countdown(completion, numbers, target)
