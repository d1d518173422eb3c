"""Multi-digit arithmetic (ALGORITHMS.md 5.2) with a worked, column-by-column solution format.

Prompt "347+285=", solution "<think>7+5=12 4+8+1=13 3+2+1=6</think><answer>632</answer>".
Subtraction (a >= b) works column by column with borrows ("14-8=6" when a ten was borrowed).
The verifier extracts the last <answer> span and compares integers exactly.
"""
from __future__ import annotations

import numpy as np

from jaxrl_self.models.tokenizer import CharTokenizer
from jaxrl_self.rewards.answers import extract_tagged, parse_int
from jaxrl_self.tasks.base import Example
from jaxrl_self.tasks.procedural import ProceduralExamples

TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def make_tokenizer() -> CharTokenizer:
    return CharTokenizer("0123456789+-*= ", TAGS)


def column_work(a: int, b: int, op: str) -> str:
    """The worked solution's column steps for a+b or a-b (a >= b), least significant digit first."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(len(da)):
        x, y = int(da[i]), int(db[i]) if i < len(db) else 0
        if op == "+":
            total = x + y + carry
            steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={total}")
            carry = total // 10
        else:
            x -= carry
            carry = int(x < y)
            steps.append(f"{x + 10 * carry}-{y}={x + 10 * carry - y}")
    return " ".join(steps)


def solution_text(a: int, b: int, op: str, show_work: bool = True, drop_final_carry: bool = False) -> str:
    """The worked solution; `drop_final_carry` writes the answer without its leading carry digit
    (847+285 -> "132" instead of "1132"), the systematic mistake of imperfect demonstrations."""
    result = a + b if op == "+" else a - b
    work = f"<think>{column_work(a, b, op)}</think>" if show_work else ""
    answer = str(result)
    if drop_final_carry and op == "+" and len(answer) > max(len(str(a)), len(str(b))):
        answer = answer[1:]
    return f"{work}<answer>{answer}</answer>"


class ArithmeticTask:
    """a op b with `digits`-digit operands, op in `ops` (subset of "+-").

    rephrasing: the same problem with operands swapped ("b+a") for addition, or written as
    "-b+a" for subtraction — a different surface form with the same answer (Co-Reward).
    demo_error_rate: fraction of worked solutions (the SFT demonstrations) whose answer drops the
    final carry digit. The reference answer is always exact, so the verifier is never fooled; SFT
    on such demonstrations learns the mistake and RL with the verifier has to unlearn it.
    """

    name = "arithmetic"

    def __init__(self, digits: int = 3, ops: str = "+", seed: int = 0, train_size: int = 100_000, test_size: int = 200,
                 show_work: bool = True, demo_error_rate: float = 0.0):
        if not 0.0 <= demo_error_rate <= 1.0:
            raise ValueError(f"demo_error_rate must be in [0, 1], got {demo_error_rate}")
        if digits < 1 or not ops or set(ops) - set("+-"):
            raise ValueError(f"arithmetic task needs digits >= 1 and ops from '+-', got digits={digits}, ops={ops!r}")
        self.digits, self.ops, self.seed, self.show_work, self.demo_error_rate = digits, ops, seed, show_work, demo_error_rate
        self.sizes = {"train": train_size, "test": test_size}
        self.tokenizer = make_tokenizer()

    def _draw(self, rng: np.random.Generator):
        low, high = 10 ** (self.digits - 1), 10**self.digits
        a, b = (int(x) for x in rng.integers(low, high, size=2))
        op = self.ops[int(rng.integers(len(self.ops)))]
        if op == "-" and a < b:
            a, b = b, a
        flawed = bool(rng.random() < self.demo_error_rate)
        prompt = f"{a}{op}{b}="
        rephrasing = f"{b}+{a}=" if op == "+" else f"-{b}+{a}="
        solution = solution_text(a, b, op, self.show_work, drop_final_carry=flawed)
        return prompt, Example(prompt, str(a + b if op == "+" else a - b), solution, rephrasing=rephrasing)

    def examples(self, split: str) -> ProceduralExamples:
        return ProceduralExamples(self._draw, self.seed, split, self.sizes[split])

    def score(self, completion: str, reference: str) -> dict:
        answer = extract_tagged(completion)
        value = parse_int(answer) if answer is not None else None
        correct = float(value is not None and value == int(reference))
        return {"reward": correct, "correct": correct, "format_ok": float(answer is not None)}
