"""Tasks read from JSON Lines files: one JSON object per line, one file per split.

A line such as ``{"question": "Tom has 3 apples ...", "answer": "... #### 42"}`` becomes
``Example(prompt="Tom has 3 apples ...", reference="42", solution="... #### 42", uid=i)``.
An optional field (`category_field`, default "category") names the problem's category, a string
or an integer (a difficulty level, a topic); a line without it is in the category "all".
Blank lines are skipped; any other line that cannot become an example, or a file with no
example at all, stops loading with a `DataError` naming the file, the 1-based line number and the field.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from jaxrl_self.rewards.answers import extract_boxed
from jaxrl_self.rewards.math_verify import math_score
from jaxrl_self.tasks.base import Example
from jaxrl_self.tasks.errors import DataError

AnswerFormat = Literal["gsm8k", "boxed", "plain"]
ANSWER_FORMATS = ("gsm8k", "boxed", "plain")
PROMPT_PLACEHOLDER = "{prompt}"
DEFAULT_CATEGORY = "all"  # the category of a record without a category field


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
    category_field: str = "",
) -> tuple[list[Example], list[int], list[str]]:
    """Reads every non-blank line of a JSONL file as an `Example`; uid is its index among them.
    Returns the examples, the 1-based line number of each and the category label of each: the
    line's `category_field` (a string, or an integer as text), `DEFAULT_CATEGORY` without one.

    Raises DataError naming the path when the file cannot be read or has no example, and naming the path, the
    1-based line number and the field for a line that is not UTF-8, not valid JSON, not an
    object, lacks a field, has a non-string field, or has an answer of the wrong form or a
    category that is neither a string nor an integer.
    """
    try:
        with open(path, "rb") as file:
            raw_lines = file.read().splitlines()
    except OSError as error:
        raise DataError(f"cannot read JSONL file {os.fspath(path)!r}: {error.strerror or error}") from error

    examples, line_numbers, labels = [], [], []
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
        label = record.get(category_field, DEFAULT_CATEGORY) if category_field else DEFAULT_CATEGORY
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(f"{where}: field {category_field!r} (the category) must be a string or an integer, "
                            f"got {type(label).__name__}")
        labels.append(str(label))
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
    return examples, line_numbers, labels


class MathDataTask:
    """A task over named splits of a dataset (`self._examples`: split -> examples), scored by the
    math verifier; the JSONL and tfds tasks fill `_examples` from their sources and the categories
    with `_index_categories`."""

    name: str
    _examples: dict[str, Sequence[Example]]
    category_names: tuple[str, ...]
    _categories: dict[str, np.ndarray]

    def _index_categories(self, labels: Mapping[str, Sequence[str]]) -> None:
        """Sets `category_names`, the distinct labels of all splits in sorted order, and each split's
        category indices from `labels` (split -> the category label of each of its examples)."""
        self.category_names = tuple(sorted({label for split_labels in labels.values() for label in split_labels}))
        index = {name: i for i, name in enumerate(self.category_names)}
        self._categories = {split: np.array([index[label] for label in split_labels], np.int32).reshape(-1)
                            for split, split_labels in labels.items()}

    def categories(self, split: str) -> np.ndarray:
        """The category of every example of `split` (an index into `category_names`): `[N]` int32."""
        self.examples(split)  # a split not configured is a DataError
        return self._categories[split]

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
      category_field: the JSON field naming a problem's category ("" = one category for all).
    """

    def __init__(
        self,
        name: str,
        files: Mapping[str, str | os.PathLike],
        prompt_field: str = "question",
        answer_field: str = "answer",
        answer_format: AnswerFormat = "gsm8k",
        template: str = PROMPT_PLACEHOLDER,
        category_field: str = "category",
    ):
        check_task_options(answer_format, template)
        self.name = name
        self._examples, self._lines, labels = {}, {}, {}
        for split, path in files.items():
            self._examples[split], lines, labels[split] = read_jsonl_examples(
                path, prompt_field, answer_field, answer_format, template, category_field)
            self._lines[split] = [f"{os.fspath(path)}:{line}" for line in lines]
        self._index_categories(labels)
        self._examples = {split: [dataclasses.replace(example, category=int(category))
                                  for example, category in zip(examples, self._categories[split])]
                          for split, examples in self._examples.items()}

    def where(self, split: str, index: int) -> str:
        """The file and 1-based line of example `index` of `split`: "train.jsonl:12"."""
        return self._lines[split][index]

