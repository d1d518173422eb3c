"""Shared machinery of procedurally generated tasks: deterministic, disjoint train/test splits.

Instance i of a split is drawn from `np.random.default_rng([seed, split_id, i])`, so any example
can be regenerated from (seed, split, index) alone — no files, nothing downloaded. An instance
belongs to the test split iff a stable hash of its content falls in the held-out bucket, so the
two splits never share a problem. A task with several generator settings (categories, e.g. the
number of digits) draws instance i with setting `i % num_categories`, so every category has an
equal share of a split and the category of any index is known without drawing it.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Sequence

import numpy as np

from jaxrl_self.tasks.base import Example

SPLIT_IDS = {"train": 0, "test": 1}
HELD_OUT_BUCKETS = 10  # one bucket in ten is held out


def is_held_out(key: str) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return digest[0] % HELD_OUT_BUCKETS == 0


class ProceduralExamples(Sequence[Example]):
    """A lazily generated, random-access split of a procedural task.

    make(rng, category) -> (key, Example-without-uid): draws one candidate instance of the
    generator setting `category` in [0, num_categories); `key` identifies the problem for the split hash.
    """

    def __init__(self, make: Callable[[np.random.Generator, int], tuple[str, Example]], seed: int, split: str, size: int,
                 num_categories: int = 1):
        if split not in SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_IDS)}")
        self._make, self._seed, self._split, self._size = make, seed, split, size
        self.num_categories = num_categories

    def categories(self) -> np.ndarray:
        """The category of every instance: `[size]` int32, instance i's is `i % num_categories`."""
        return (np.arange(self._size) % self.num_categories).astype(np.int32)

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._size))]
        if not -self._size <= index < self._size:
            raise IndexError(index)
        index %= self._size
        rng = np.random.default_rng([self._seed, SPLIT_IDS[self._split], index])
        want_held_out = self._split == "test"
        category = index % self.num_categories
        for _ in range(10_000):
            key, example = self._make(rng, category)
            if is_held_out(key) == want_held_out:
                return dataclasses.replace(example, uid=index, category=category)
        raise RuntimeError(f"could not draw a {self._split} instance; the task space is too small")
