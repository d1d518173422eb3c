"""Tasks read from JSON Lines files: one JSON object per line, one file per split.

A line such as ``{"question": "Tom has 3 apples ...", "answer": "... #### 42"}`` becomes
``Example(prompt="Tom has 3 apples ...", reference="42", solution="... #### 42", uid=i)``.
Blank lines are skipped; any other line that cannot become an example, or a file with no
example at all, stops loading with a `DataError` naming the file, the 1-based line number and the field.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Literal

from jaxrl_self.rewards.answers import extract_boxed
from jaxrl_self.rewards.math_verify import math_score
from jaxrl_self.tasks.base import Example
from jaxrl_self.tasks.errors import DataError

AnswerFormat = Literal["gsm8k", "boxed", "plain"]
ANSWER_FORMATS = ("gsm8k", "boxed", "plain")
PROMPT_PLACEHOLDER = "{prompt}"


def parse_answer(answer_text: str, answer_format: AnswerFormat) -> tuple[str, str]:
    """Splits a dataset's answer field into (reference, solution).

    gsm8k: ``"<worked solution> #### 1,234"`` -> ("1234", whole text); commas and spaces removed.
    boxed: a worked solution ending in ``\\boxed{x}`` (MATH style) -> ("x", whole text).
    plain: the answer itself -> (stripped text, "").
    Raises ValueError (with the reason) when the text does not have the expected form.
    """
    if answer_format == "gsm8k":
        marker = answer_text.rfind("####")
        if marker < 0:
            raise ValueError("GSM8K answer has no '#### <answer>' marker")
        reference = answer_text[marker + 4 :].strip().replace(",", "")
        if not reference:
            raise ValueError("GSM8K answer is empty after '####'")
        return reference, answer_text
    if answer_format == "boxed":
        reference = extract_boxed(answer_text)
        if reference is None:
            raise ValueError("answer has no complete \\boxed{...} or \\fbox{...}")
        return reference.strip(), answer_text
    if answer_format == "plain":
        reference = answer_text.strip()
        if not reference:
            raise ValueError("answer is empty")
        return reference, ""
    raise ValueError(f"unknown answer_format {answer_format!r}; expected one of {ANSWER_FORMATS}")


def apply_template(template: str, prompt: str) -> str:
    """`template` with ``{prompt}`` replaced by `prompt` (plain replacement: other braces are kept)."""
    return template.replace(PROMPT_PLACEHOLDER, prompt)


def check_task_options(answer_format: str, template: str) -> None:
    """Raises ValueError for an unknown answer format or a template without ``{prompt}``."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"unknown answer_format {answer_format!r}; expected one of {ANSWER_FORMATS}")
    if PROMPT_PLACEHOLDER not in template:
        raise ValueError(f"template {template!r} must contain {PROMPT_PLACEHOLDER}")


def read_jsonl_examples(
    path: str | os.PathLike,
    prompt_field: str,
    answer_field: str,
    answer_format: AnswerFormat,
    template: str = PROMPT_PLACEHOLDER,
) -> tuple[list[Example], list[int]]:
    """Reads every non-blank line of a JSONL file as an `Example`; uid is its index among them.
    Returns the examples and the 1-based line number of each.

    Raises DataError naming the path when the file cannot be read or has no example, and naming the path, the
    1-based line number and the field for a line that is not UTF-8, not valid JSON, not an
    object, lacks a field, has a non-string field, or has an answer of the wrong form.
    """
    try:
        with open(path, "rb") as file:
            raw_lines = file.read().splitlines()
    except OSError as error:
        raise DataError(f"cannot read JSONL file {os.fspath(path)!r}: {error.strerror or error}") from error

    examples, line_numbers = [], []
    for line_number, raw_line in enumerate(raw_lines, start=1):
        where = f"{os.fspath(path)}:{line_number}"
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{where}: line is not valid UTF-8 ({error.reason})") from error
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from error
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        for field in (prompt_field, answer_field):
            if field not in record:
                raise DataError(f"{where}: field {field!r} is missing (keys: {sorted(record)})")
            if not isinstance(record[field], str):
                raise DataError(
                    f"{where}: field {field!r} must be a string, got {type(record[field]).__name__}"
                )
        try:
            reference, solution = parse_answer(record[answer_field], answer_format)
        except ValueError as error:
            raise DataError(f"{where}: field {answer_field!r}: {error}") from error
        examples.append(
            Example(
                prompt=apply_template(template, record[prompt_field]),
                reference=reference,
                solution=solution,
                uid=len(examples),
            )
        )
        line_numbers.append(line_number)
    if not examples:
        raise DataError(f"{os.fspath(path)}: no examples (the file is empty or has only blank lines)")
    return examples, line_numbers


class MathDataTask:
    """A task over named splits of a dataset (`self._examples`: split -> examples), scored by the
    math verifier; the JSONL and tfds tasks fill `_examples` from their sources."""

    name: str
    _examples: dict[str, Sequence[Example]]

    def examples(self, split: str) -> Sequence[Example]:
        """The examples of `split`, in source order. Raises DataError for a split not configured."""
        if split not in self._examples:
            raise DataError(f"task {self.name!r} has no split {split!r}; splits: {sorted(self._examples)}")
        return self._examples[split]

    def score(self, completion: str, reference: str) -> Mapping[str, float]:
        """Scores a completion with `jaxrl_self.rewards.math_verify.math_score`."""
        return math_score(completion, reference)

    def where(self, split: str, index: int) -> str:
        """Where example `index` of `split` comes from, for messages."""
        return f"task {self.name!r}, {split} example {index}"


class JsonlTask(MathDataTask):
    """A task whose splits are JSONL files, scored by the math verifier.

    Every file is read when the task is built, so a bad file fails at start-up, not mid-run.

    Args:
      name: the task's name (used in logs and per-task eval breakdowns).
      files: split name -> path, e.g. {"train": "gsm8k_train.jsonl", "test": "gsm8k_test.jsonl"}.
      prompt_field: the JSON field holding the question.
      answer_field: the JSON field holding the answer.
      answer_format: how to read the answer field, see `parse_answer`.
      template: the prompt shown to the model; ``{prompt}`` is replaced by the question.
    """

    def __init__(
        self,
        name: str,
        files: Mapping[str, str | os.PathLike],
        prompt_field: str = "question",
        answer_field: str = "answer",
        answer_format: AnswerFormat = "gsm8k",
        template: str = PROMPT_PLACEHOLDER,
    ):
        check_task_options(answer_format, template)
        self.name = name
        self._examples, self._lines = {}, {}
        for split, path in files.items():
            self._examples[split], lines = read_jsonl_examples(path, prompt_field, answer_field, answer_format, template)
            self._lines[split] = [f"{os.fspath(path)}:{line}" for line in lines]

    def where(self, split: str, index: int) -> str:
        """The file and 1-based line of example `index` of `split`: "train.jsonl:12"."""
        return self._lines[split][index]

