"""The RL train batch type: required fields, and absent optional fields through row slicing and sharding."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrl_self.parallel import MESH_AXES, shard_batch
from jaxrl_self.train.batch import RolloutBatch

N, P, T = 8, 3, 5


def arrays():
    return dict(prompt_tokens=np.ones((N, P), np.int32), prompt_mask=np.ones((N, P), bool),
                completion_tokens=np.ones((N, T), np.int32), completion_mask=np.ones((N, T), bool))


def test_missing_required_field_is_named():
    with pytest.raises(TypeError, match="advantages"):
        RolloutBatch(**arrays())


def test_absent_optional_fields_survive_micro_batches_and_sharding():
    batch = RolloutBatch(**arrays(), advantages=np.arange(N, dtype=np.float32), kl_coef=np.ones(N, np.float32))
    assert len(jax.tree.leaves(batch)) == 6  # None fields hold no leaf
    micro_batches = jax.tree.map(lambda x: x.reshape(2, -1, *x.shape[1:]), batch)
    assert micro_batches.advantages.shape == (2, N // 2) and micro_batches.completion_tokens.shape == (2, N // 2, T)
    assert micro_batches.old_logp is None and micro_batches.ref_logp is None
    sums, _ = jax.lax.scan(lambda total, micro: (total + jnp.sum(micro.advantages), None), 0.0, micro_batches)
    assert float(sums) == float(np.sum(batch.advantages))

    sharded = shard_batch(batch, jax.make_mesh((1, 1, 1), MESH_AXES, devices=jax.devices()[:1]))
    assert isinstance(sharded, RolloutBatch) and sharded.returns is None
    np.testing.assert_array_equal(sharded.kl_coef, batch.kl_coef)
