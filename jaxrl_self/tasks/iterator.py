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

_CONFIG_KEYS = ("num_examples", "batch_size", "seed", "shard_index", "shard_count")


class PromptIterator:
    """Endless shuffled batches of example indices in [0, num_examples), one shard per host.

    Each epoch draws one permutation of all indices from `np.random.default_rng([seed, epoch])`;
    shard `s` of `S` takes every S-th entry starting at `s` (``perm[s::S]``), cut to
    ``num_examples // S`` entries so that all shards are the same length (at most S - 1
    examples per epoch are left out, different ones each epoch). Shards are disjoint within an
    epoch and together see each kept example exactly once.

    A shard's epochs are laid end to end and cut into consecutive batches of `batch_size`, so a
    batch may span an epoch boundary and no example is dropped for a short last batch.

    The state is the number of indices this shard has handed out; `get_state()` / `set_state()`
    round-trip through JSON, and a restored iterator continues with exactly the batches the
    original would have produced.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, shard_index: int = 0, shard_count: int = 1):
        if shard_count < 1 or not 0 <= shard_index < shard_count:
            raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index} and {shard_count}")
        if num_examples < shard_count:
            raise ValueError(f"num_examples={num_examples} is smaller than shard_count={shard_count}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.shard_index = shard_index
        self.shard_count = shard_count
        self.shard_size = num_examples // shard_count
        self._position = 0
        self._cached_epoch = -1
        self._cached_order = np.empty((0,), np.int64)

    @property
    def epoch(self) -> int:
        """The epoch the next index comes from (0-based)."""
        return self._position // self.shard_size

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This shard's indices for `epoch`, in the order they are handed out: [shard_size] int64."""
        if epoch != self._cached_epoch:
            permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            self._cached_order = permutation[self.shard_index :: self.shard_count][: self.shard_size].astype(np.int64)
            self._cached_epoch = epoch
        return self._cached_order

    def next(self) -> np.ndarray:
        """The next batch of example indices: [batch_size] int64."""
        parts = []
        needed = self.batch_size
        while needed:
            epoch, offset = divmod(self._position, self.shard_size)
            part = self.epoch_order(epoch)[offset : offset + needed]
            parts.append(part)
            needed -= len(part)
            self._position += len(part)
        return np.concatenate(parts)

    def __iter__(self) -> PromptIterator:
        return self

    def __next__(self) -> np.ndarray:
        return self.next()

    def get_state(self) -> dict[str, int]:
        """A JSON-serialisable snapshot: the configuration plus the position in this shard's stream."""
        state = {key: getattr(self, key) for key in _CONFIG_KEYS}
        state["position"] = self._position
        return state

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a snapshot from `get_state()`; the configuration must match this iterator's.

        Raises ValueError naming the first key whose value differs (restoring with another batch
        size or shard layout would not reproduce the original stream).
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
