"""Multi-digit arithmetic (docs/algorithms.md#procedural-tasks-countdown-and-arithmetic) with a worked, column-by-column solution format.

Prompt "347+285=", solution "<think>7+5=12 4+8+1=13 3+2+1=6</think><answer>632</answer>".
Subtraction (a >= b) works column by column with borrows ("14-8=6" when a ten was borrowed).
With `self_check` the solution computes the result twice, both ways round, before answering:
"<think>3+5=08 5+3=08</think><answer>08</answer>" (results zero-padded to a fixed width; with
`show_work`, the column work then both results: "<think>3+5=8 =08 =08</think><answer>08</answer>").
The verifier extracts the last <answer> span and compares integers exactly.
`MixedArithmeticTask` mixes operand sizes 1..digits, one category per size (docs/curricula.md).
"""
from __future__ import annotations

import numpy as np

from jaxrl_self.models.tokenizer import CharTokenizer
from jaxrl_self.rewards.answers import extract_tagged, parse_int
from jaxrl_self.tasks.base import Example
from jaxrl_self.tasks.procedural import ProceduralExamples

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
OPS = "+-"  # the operations `ops` may list
MAX_DIGITS = 18  # operands are drawn as int64: 10**digits must fit


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


def self_check_text(a: int, b: int, op: str, results: tuple[int, int], answer: int, width: int,
                    show_work: bool = False) -> str:
    """The self-check solution: the result computed as a op b and again the other way round
    (b+a, or -b+a), then the answer, numbers zero-padded to `width` digits so that every solution
    of a task has the same length: "<think>3+5=08 5+3=08</think><answer>08</answer>".
    With `show_work` the column work comes first and both results are read off it:
    "<think>7+5=12 4+8+1=13 =132 =132</think><answer>132</answer>" for 47+85."""
    first, second = (f"{x:0{width}d}" for x in results)
    if show_work:
        return f"<think>{column_work(a, b, op)} ={first} ={second}</think><answer>{answer:0{width}d}</answer>"
    swapped = f"{b}+{a}" if op == "+" else f"-{b}+{a}"
    return f"<think>{a}{op}{b}={first} {swapped}={second}</think><answer>{answer:0{width}d}</answer>"


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

    show_work: the worked solution shows its column work before the answer (else the answer alone).
    rephrasing: the same problem with operands swapped ("b+a") for addition, or written as
    "-b+a" for subtraction — a different surface form with the same answer (Co-Reward).
    demo_error_rate: fraction of worked solutions (the SFT demonstrations) whose answer drops the
    final carry digit. The reference answer is always exact, so the verifier is never fooled; SFT
    on such demonstrations learns the mistake and RL with the verifier has to unlearn it.
    self_check: the worked solution computes the result twice (`self_check_text`): a op b and the
    other way round, or, with `show_work`, twice read off one column work (`demo_error_rate` then
    does not apply). check_error_rate: with `self_check`, the chance that each of the two
    demonstrated results is off by one, independently; when they disagree the demonstrated answer
    is a uniform guess at the answer's width. A model trained on these is sure of its answer after
    two agreeing results and spreads it over ~10 digits after two disagreeing ones, so right results
    earn more confidence than wrong ones — the link confidence rewards (INTUITOR, RENT) need. (A
    guess between just the two results would not do for INTUITOR: KL(U || p) is the mean
    log-probability over the vocabulary, which hardly changes when one likely token becomes two.)
    """

    name = "arithmetic"

    def __init__(self, digits: int = 3, ops: str = "+", seed: int = 0, train_size: int = 100_000, test_size: int = 200,
                 show_work: bool = True, demo_error_rate: float = 0.0, self_check: bool = False,
                 check_error_rate: float = 0.0):
        for name, rate in (("demo_error_rate", demo_error_rate), ("check_error_rate", check_error_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {rate}")
        if not 1 <= digits <= MAX_DIGITS or not ops or set(ops) - set(OPS):
            raise ValueError(f"arithmetic task needs digits in [1, {MAX_DIGITS}] and ops from {OPS!r}, got digits={digits}, ops={ops!r}")
        self.digits, self.ops, self.seed, self.show_work, self.demo_error_rate = digits, ops, seed, show_work, demo_error_rate
        self.self_check, self.check_error_rate = self_check, check_error_rate
        self.sizes = {"train": train_size, "test": test_size}
        self.tokenizer = make_tokenizer()
        self.category_names = (f"{digits}-digit",)  # one generator setting, one category

    def operand_digits(self, category: int) -> int:
        """The operands' number of digits in `category`."""
        return self.digits

    def _draw(self, rng: np.random.Generator, category: int = 0):
        digits = self.operand_digits(category)
        low, high = 10 ** (digits - 1), 10**digits
        a, b = (int(x) for x in rng.integers(low, high, size=2))
        op = self.ops[int(rng.integers(len(self.ops)))]
        if op == "-" and a < b:
            a, b = b, a
        flawed = bool(rng.random() < self.demo_error_rate)
        prompt = f"{a}{op}{b}="
        rephrasing = f"{b}+{a}=" if op == "+" else f"-{b}+{a}="
        result = a + b if op == "+" else a - b
        if self.self_check:
            solution = self._self_check_demo(a, b, op, result, digits + 1, rng)
        else:
            solution = solution_text(a, b, op, self.show_work, drop_final_carry=flawed)
        return prompt, Example(prompt, str(result), solution, rephrasing=rephrasing)

    def _self_check_demo(self, a: int, b: int, op: str, result: int, width: int, rng: np.random.Generator) -> str:
        """A self-check demonstration whose two computations are each off by one with
        `check_error_rate`; the answer is their common value, or a uniform guess at the answer's `width`."""
        off = rng.random(2) < self.check_error_rate
        signs = np.where(rng.random(2) < 0.5, -1, 1)
        results = tuple(max(0, result + int(sign)) if wrong else result for wrong, sign in zip(off, signs))
        answer = results[0] if results[0] == results[1] else int(rng.integers(10 ** width))
        return self_check_text(a, b, op, results, answer, width, self.show_work)

    def examples(self, split: str) -> ProceduralExamples:
        return ProceduralExamples(self._draw, self.seed, split, self.sizes[split], len(self.category_names))

    def categories(self, split: str) -> np.ndarray:
        return self.examples(split).categories()

    def score(self, completion: str, reference: str) -> dict:
        answer = extract_tagged(completion)
        value = parse_int(answer) if answer is not None else None
        correct = float(value is not None and value == int(reference))
        return {"reward": correct, "correct": correct, "format_ok": float(answer is not None)}


class MixedArithmeticTask(ArithmeticTask):
    """`ArithmeticTask` with operands of 1 to `digits` digits: category c (named "<c+1>-digit") holds
    the problems with (c+1)-digit operands, an equal share of each split. The task of the curriculum
    measurements (docs/curricula.md): its categories range from solved to hard for a small model."""

    name = "arithmetic_mixed"

    def __init__(self, digits: int = 5, **options):
        super().__init__(digits=digits, **options)
        self.category_names = tuple(f"{d}-digit" for d in range(1, digits + 1))

    def operand_digits(self, category: int) -> int:
        return category + 1
