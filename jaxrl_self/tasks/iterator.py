"""Deterministic, resumable, sharded batches of example indices for the prompt pipeline.

Why not grain's `IndexSampler`: it shards by striding over a *global* record index (the caller
must hand it `shard_index + i * shard_count`) and its state is the position of a `DataLoader`
around it. We need only indices, not records, and a state that is two integers; a NumPy
permutation per epoch from `np.random.default_rng([seed, epoch])` gives that in a few lines,
and any epoch's order can be recomputed from (seed, epoch) alone, so resuming needs no replay.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

_CONFIG_KEYS = ("num_examples", "global_batch_size", "seed")


class PromptIterator:
    """Endless shuffled batches of example indices in [0, num_examples), one shard per host.

    The global stream is one permutation of all indices per epoch, from
    `np.random.default_rng([seed, epoch])`, the epochs laid end to end; it is cut into consecutive
    global batches of `batch_size * shard_count` indices, and shard `s` of `S` takes the `s`-th
    slice of `batch_size` of each. So the shards' batches, concatenated in shard order, are
    exactly the batches one unsharded iterator with the global batch size hands out: a run reads
    the same prompts in the same order whatever its number of processes. Shards are disjoint
    within a global batch that does not span an epoch boundary (a batch that does may repeat an
    example, sharded or not); no example is dropped.

    The state is the position in the global stream, the same on every shard: `get_state()` /
    `set_state()` round-trip through JSON, a restored iterator continues with exactly the
    batches the original would have produced, and a state saved by one shard restores any shard
    of any layout with the same global batch size.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, shard_index: int = 0, shard_count: int = 1):
        if shard_count < 1 or not 0 <= shard_index < shard_count:
            raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index} and {shard_count}")
        if num_examples < 1:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.shard_index = shard_index
        self.shard_count = shard_count
        self.global_batch_size = batch_size * shard_count
        self._position = 0  # indices of the global stream handed out, by all shards together
        self._cached_epoch = -1
        self._cached_order = np.empty((0,), np.int64)

    @property
    def epoch(self) -> int:
        """The epoch the next global batch starts in (0-based)."""
        return self._position // self.num_examples

    def epoch_order(self, epoch: int) -> np.ndarray:
        """All indices of `epoch` in global stream order: [num_examples] int64."""
        if epoch != self._cached_epoch:
            self._cached_order = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples).astype(np.int64)
            self._cached_epoch = epoch
        return self._cached_order

    def next(self) -> np.ndarray:
        """This shard's slice of the next global batch: [batch_size] int64."""
        start = self._position + self.shard_index * self.batch_size
        self._position += self.global_batch_size
        parts = []
        needed = self.batch_size
        while needed:
            epoch, offset = divmod(start, self.num_examples)
            part = self.epoch_order(epoch)[offset : offset + needed]
            parts.append(part)
            needed -= len(part)
            start += len(part)
        return np.concatenate(parts)

    def __iter__(self) -> PromptIterator:
        return self

    def __next__(self) -> np.ndarray:
        return self.next()

    def get_state(self) -> dict[str, int]:
        """A JSON-serialisable snapshot: the configuration plus the position in the global stream."""
        state = {key: getattr(self, key) for key in _CONFIG_KEYS}
        state["position"] = self._position
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a snapshot from `get_state()` of any shard; the configuration must match this iterator's.

        Raises ValueError naming the first key whose value differs (restoring with another global
        batch size would not reproduce the original stream).
        """
        for key in _CONFIG_KEYS:
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"iterator state was saved with {key}={state.get(key)!r}, this iterator has {getattr(self, key)!r}"
                )
        position = int(state["position"])
        if position < 0:
            raise ValueError(f"iterator state has a negative position {position}")
        self._position = position


class CategoryIterator:
    """Example indices drawn by category: one endless shuffled stream per category (a curriculum's
    prompt source, docs/curricula.md).

    `categories` `[N]` gives the category of each example; stream c is a `PromptIterator` over the
    examples of category c (in index order) with its own seed, from (seed, c). `next(wanted)` hands
    out, for each requested category in order, the next index of that category's stream. Every
    process asks for the whole global batch and keeps its own slice, so the streams advance alike
    everywhere. The state is the position of every stream: `get_state()` / `set_state()` round-trip
    through JSON, and a restored iterator continues with exactly the indices the original would give.
    """

    def __init__(self, categories: np.ndarray, num_categories: int, seed: int):
        categories = np.asarray(categories)
        self.members = [np.flatnonzero(categories == c) for c in range(num_categories)]
        empty = [c for c, members in enumerate(self.members) if not len(members)]
        if empty:
            raise ValueError(f"categories {empty} have no examples")
        self.seed = seed
        self.streams = [PromptIterator(len(members), 1, int(np.random.SeedSequence([seed, c]).generate_state(1)[0]))
                        for c, members in enumerate(self.members)]

    def next(self, wanted: np.ndarray) -> np.ndarray:
        """The next example index of each category of `wanted` `[B]` int: `[B]` int64."""
        return np.array([self.members[c][self.streams[c].next()[0]] for c in np.asarray(wanted)], np.int64)

    def get_state(self) -> dict:
        """A JSON-serialisable snapshot: the seed and every stream's position."""
        return {"seed": self.seed, "positions": [stream.get_state()["position"] for stream in self.streams]}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a snapshot from `get_state()`; raises ValueError when it was saved with another seed
        or number of categories."""
        if state.get("seed") != self.seed or len(state.get("positions", ())) != len(self.streams):
            raise ValueError(f"category iterator state was saved with seed {state.get('seed')!r} and "
                             f"{len(state.get('positions', ()))} categories, this iterator has {self.seed} and {len(self.streams)}")
        for stream, position in zip(self.streams, state["positions"]):
            stream.set_state({**stream.get_state(), "position": position})
