"""One- and two-digit arithmetic word problems in chat format, for small instruct models.

"Mia has 23 stickers. She gets 9 more. How many stickers does Mia have now?" (+, -, x with
one-digit factors, or ">": which of two amounts is larger; `digits` bounds the operands of +, -
and >). Each prompt is a one-shot chat
rendered with the model's chat template (generation prompt included), so `Example.prompt` is the
exact text the model continues: a user turn with a fixed demonstration problem of the same
operation, the assistant's answer to it in the required format, then the user turn with the
problem. (SmolLM2-135M-Instruct follows the <answer> format in 100% of greedy replies with the
demonstration and in 0% without it.)

Answer format (`answer_format`):
  "number": the instruction asks for only the number; the whole completion, stripped, must be
            one integer (a trailing period is allowed) — "32" or "32.".
  "tag":    the instruction asks for <answer>N</answer>; the completion must contain such a span
            with an integer inside (the last one counts), as the label-free recipes extract it.
Anything else scores format_ok 0 and reward 0. The verifier is strict on purpose: the reward
measures following the format as well as getting the arithmetic right.

The problem (operation and operands) decides the split, whatever its wording, so no held-out
problem is ever trained on. `rephrasing` states the same problem with another template (Co-Reward).
"""
from __future__ import annotations

import re

import numpy as np

from jaxrl_self.rewards.answers import extract_tagged
from jaxrl_self.tasks.base import Example
from jaxrl_self.tasks.procedural import ProceduralExamples

NAMES = (("Mia", "She"), ("Tom", "He"), ("Ana", "She"), ("Sam", "He"), ("Lea", "She"), ("Ben", "He"), ("Zoe", "She"), ("Max", "He"))
ITEMS = ("apples", "stickers", "marbles", "books", "coins", "pencils", "cookies", "shells")
TEMPLATES = {
    "+": ("{name} has {a} {items}. {pronoun} gets {b} more. How many {items} does {name} have now?",
          "{name} had {a} {items} and then found {b} more {items}. How many {items} does {name} have in total?"),
    "-": ("{name} has {a} {items} and gives {b} of them away. How many {items} does {name} have left?",
          "There were {a} {items} in a box. {name} took {b} of them. How many {items} are still in the box?"),
    "*": ("{name} has {a} bags with {b} {items} in each bag. How many {items} does {name} have in total?",
          "There are {a} rows of {items} with {b} {items} in each row. How many {items} are there altogether?"),
    ">": ("A red box holds {a} {items} and a blue box holds {b} {items}. How many {items} are in the fuller box?",
          "{name} has two bags: one with {a} {items}, the other with {b} {items}. How many {items} are in the bigger bag?"),
}
OPS = "".join(TEMPLATES)  # the operations `ops` may list
DIGITS = (1, 2)  # the operand sizes `digits` may be
INSTRUCTIONS = {  # answer_format -> the instruction after the question
    "number": "Reply with only the final number.",
    "tag": "Write the final number inside answer tags.",
}
# The one-shot demonstration for each operation: (question, answer).
DEMOS = {
    "+": ("Lily has 5 balls. She gets 3 more. How many balls does Lily have now?", 8),
    "-": ("Lily has 9 balls and gives 4 of them away. How many balls does Lily have left?", 5),
    "*": ("Lily has 3 bags with 2 balls in each bag. How many balls does Lily have in total?", 6),
    ">": ("A red box holds 4 balls and a blue box holds 7 balls. How many balls are in the fuller box?", 7),
}
_BARE_NUMBER = re.compile(r"\s*(-?\d+)\.?\s*")
_INTEGER = re.compile(r"-?\d+")


def parse_answer(completion: str, answer_format: str) -> int | None:
    """The integer answer under the strict format, or None when the completion does not follow it."""
    if answer_format == "number":
        match = _BARE_NUMBER.fullmatch(completion)
        return int(match.group(1)) if match else None
    content = extract_tagged(completion)
    return int(content) if content is not None and _INTEGER.fullmatch(content) else None


class WordArithmeticTask:
    """Word problems with `digits`-digit operands (1 or 2; "*" always uses one-digit factors),
    rendered with `tokenizer`'s chat template.

    ops: subset of "+-*>". tokenizer: an `HFTokenizer` (needs `apply_chat_template`); it becomes
    the task's tokenizer.
    """

    name = "word_arithmetic"

    def __init__(self, tokenizer, ops: str = "+-*", digits: int = 2, answer_format: str = "tag", seed: int = 0,
                 train_size: int = 100_000, test_size: int = 200):
        if not ops or set(ops) - set(OPS):
            raise ValueError(f"word_arithmetic ops must be a non-empty subset of {OPS!r}, got {ops!r}")
        if digits not in DIGITS:
            raise ValueError(f"word_arithmetic digits must be one of {DIGITS}, got {digits}")
        if answer_format not in INSTRUCTIONS:
            raise ValueError(f"word_arithmetic answer_format must be one of {sorted(INSTRUCTIONS)}, got {answer_format!r}")
        self.tokenizer, self.ops, self.digits, self.answer_format, self.seed = tokenizer, ops, digits, answer_format, seed
        self.sizes = {"train": train_size, "test": test_size}
        self.category_names = (f"{digits}-digit",)  # one generator setting, one category

    def format_answer(self, value: int) -> str:
        return f"<answer>{value}</answer>" if self.answer_format == "tag" else str(value)

    def render(self, question: str, op: str) -> str:
        """The one-shot chat (demonstration of `op`, then `question`) in the chat template, ready for the reply."""
        instruction = INSTRUCTIONS[self.answer_format]
        demo_question, demo_answer = DEMOS[op]
        messages = [{"role": "user", "content": f"{demo_question} {instruction}"},
                    {"role": "assistant", "content": self.format_answer(demo_answer)},
                    {"role": "user", "content": f"{question} {instruction}"}]
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)

    def _draw(self, rng: np.random.Generator, category: int = 0):
        op = self.ops[int(rng.integers(len(self.ops)))]
        high = 10 if op == "*" else 10**self.digits
        a, b = (int(x) for x in rng.integers(1, high, size=2))
        if op == "-" and a < b:
            a, b = b, a
        if op == ">" and a == b:  # two different amounts, so exactly one box is fuller
            b = a + 1 if a + 1 < high else a - 1
        name, pronoun = NAMES[int(rng.integers(len(NAMES)))]
        items = ITEMS[int(rng.integers(len(ITEMS)))]
        first, second = TEMPLATES[op] if rng.random() < 0.5 else TEMPLATES[op][::-1]
        fill = dict(name=name, pronoun=pronoun, items=items, a=a, b=b)
        answer = {"+": a + b, "-": a - b, "*": a * b, ">": max(a, b)}[op]
        example = Example(self.render(first.format(**fill), op), str(answer), self.format_answer(answer),
                          rephrasing=self.render(second.format(**fill), op))
        return f"{a}{op}{b}", example

    def examples(self, split: str) -> ProceduralExamples:
        return ProceduralExamples(self._draw, self.seed, split, self.sizes[split])

    def categories(self, split: str) -> np.ndarray:
        return self.examples(split).categories()

    def score(self, completion: str, reference: str) -> dict:
        value = parse_answer(completion, self.answer_format)
        correct = float(value is not None and value == int(reference))
        return {"reward": correct, "correct": correct, "format_ok": float(value is not None)}
