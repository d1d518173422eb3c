"""The Task interface: where prompts, reference answers and the verifier of a task come from.

A task is a random-access collection of `Example`s per split plus a verifier. Examples are plain
strings: the prompt (the exact text the model continues: a task that uses the model's chat
template renders it once, when it is built, see `tasks.chat`) and the reference the verifier
checks against.
Everything downstream of the task works on token arrays; strings exist only here and in verifiers.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Protocol, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Example:
    """One task instance.

    prompt:    text shown to the model, chat template applied where the task uses one (`tasks.chat`).
    reference: the string the verifier checks a completion against (gold answer, or an instance
               encoding such as Countdown's "3,5,2=16").
    solution:  a worked solution for supervised warm starts; "" when the source has none.
    uid:       a stable integer id (its index in the split).
    rephrasing: an equivalent prompt with a different surface form ("" when none); Co-Reward uses it.
    category:  the index of the problem's category in its task's `category_names` (0 for a task of
               one category); curricula (docs/curricula.md) draw problems by category.
    """

    prompt: str
    reference: str
    solution: str = ""
    uid: int = 0
    rephrasing: str = ""
    category: int = 0


class Verifier(Protocol):
    def __call__(self, completion: str, reference: str) -> Mapping[str, float]:
        """Scores one completion: at least {"reward", "correct", "format_ok"}."""


class Task(Protocol):
    """A source of examples for each split and the verifier that scores completions."""

    name: str
    category_names: tuple[str, ...]  # the problem categories, K >= 1 names (docs/curricula.md)

    def examples(self, split: str) -> Sequence[Example]:
        """Random-access examples of `split` ("train" or "test"), deterministic for the task's seed."""

    def score(self, completion: str, reference: str) -> Mapping[str, float]:
        """The task's verifier (see `Verifier`)."""

    def categories(self, split: str) -> np.ndarray:
        """The category of every example of `split`: `[len(examples(split))]` int32 in [0, K)."""


def task_categories(task, split: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(category names `[K]`, the category of each example of `split` `[N]` int32) of `task`; a task
    of your own without `category_names` is one category."""
    if not hasattr(task, "category_names"):
        return ("all",), np.zeros(len(task.examples(split)), np.int32)
    return tuple(task.category_names), np.asarray(task.categories(split), np.int32)
