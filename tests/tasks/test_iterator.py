"""PromptIterator: determinism, epochs, sharding, and exact resumption from a JSON state."""
import json

import numpy as np
import pytest

from jaxrl_self.tasks.iterator import PromptIterator


def take(iterator, count):
    return [iterator.next() for _ in range(count)]


def test_batches_are_deterministic_and_cover_each_epoch_once():
    first = take(PromptIterator(10, 5, seed=3), 4)
    second = take(PromptIterator(10, 5, seed=3), 4)
    assert all(a.dtype == np.int64 and a.shape == (5,) for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    epoch0, epoch1 = np.concatenate(first[:2]), np.concatenate(first[2:])
    assert sorted(epoch0) == list(range(10)) and sorted(epoch1) == list(range(10))
    assert not np.array_equal(epoch0, epoch1)  # reshuffled per epoch
    other_seed = np.concatenate(take(PromptIterator(10, 5, seed=4), 2))
    assert not np.array_equal(epoch0, other_seed)


def test_batches_span_epoch_boundaries_without_dropping():
    iterator = PromptIterator(7, 3, seed=0)
    stream = np.concatenate(take(iterator, 7))  # 21 indices = 3 epochs of 7
    for epoch in range(3):
        assert sorted(stream[7 * epoch : 7 * (epoch + 1)]) == list(range(7))
    assert iterator.epoch == 3
    assert np.array_equal(stream[:7], np.random.default_rng([0, 0]).permutation(7))


def test_shards_split_each_global_batch_in_shard_order():
    shards = [PromptIterator(11, 3, seed=1, shard_index=s, shard_count=2) for s in range(2)]
    unsharded = PromptIterator(11, 6, seed=1)
    for _ in range(4):  # 24 indices: the third and fourth global batches span epoch boundaries
        parts = [iterator.next() for iterator in shards]
        assert np.array_equal(np.concatenate(parts), unsharded.next())
    first = [PromptIterator(11, 3, seed=1, shard_index=s, shard_count=2).next() for s in range(2)]
    assert len(set(first[0]) | set(first[1])) == 6  # disjoint within a global batch


def test_state_restores_any_shard_of_the_same_global_batch():
    writer = PromptIterator(9, 2, seed=5, shard_index=0, shard_count=2)
    take(writer, 3)
    state = json.loads(json.dumps(writer.get_state()))
    expected = take(PromptIterator(9, 4, seed=5), 5)[3:]
    halves = []
    for shard in range(2):
        reader = PromptIterator(9, 2, seed=5, shard_index=shard, shard_count=2)
        reader.set_state(state)
        halves.append(take(reader, 2))
    assert all(np.array_equal(np.concatenate([a, b]), e) for a, b, e in zip(*halves, expected))
    with pytest.raises(ValueError, match="global_batch_size"):
        PromptIterator(9, 2, seed=5, shard_count=3).set_state(state)


@pytest.mark.parametrize("consumed", [0, 1, 2, 5])
def test_resume_mid_epoch_through_json(consumed):
    original = PromptIterator(9, 4, seed=7, shard_index=1, shard_count=2)
    take(original, consumed)
    state = json.loads(json.dumps(original.get_state()))
    expected = take(original, 6)
    restored = PromptIterator(9, 4, seed=7, shard_index=1, shard_count=2)
    restored.set_state(state)
    assert all(np.array_equal(a, b) for a, b in zip(expected, take(restored, 6)))


def test_set_state_rejects_other_configuration_and_bad_arguments():
    state = PromptIterator(9, 4, seed=7).get_state()
    with pytest.raises(ValueError, match="batch_size"):
        PromptIterator(9, 3, seed=7).set_state(state)
    with pytest.raises(ValueError, match="shard_index"):
        PromptIterator(9, 4, seed=7, shard_index=3, shard_count=2)
    with pytest.raises(ValueError, match="num_examples"):
        PromptIterator(0, 4, seed=7)
