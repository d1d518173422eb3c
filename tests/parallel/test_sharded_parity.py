"""The real GRPO update, the SFT step and the greedy sampler (static and continuous batching) on three mesh shapes give the
single-device results (fp32, within 1e-5): sharding changes where the work runs, not the answer.
On the meshes the model's activations are constrained by their logical axes, the RL update
donates its state, and the sampler copies the params into its own layout (docs/scaling.md)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sharding_helpers import (
    MESH_SHAPES,
    max_abs_diff,
    mesh_of,
    single_device_mesh,
    tiny_model_config,
)

from jaxrl_self.config import load_config_file
from jaxrl_self.parallel import shard_batch, shard_state, state_shardings
from jaxrl_self.sampling.sampler import SamplingConfig, make_sampler
from jaxrl_self.train.batch import RolloutBatch
from jaxrl_self.train.rl_step import make_rl_update
from jaxrl_self.train.sft import make_sft_step
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ROWS, PROMPT_LEN, NEW_TOKENS = 16, 6, 6
TOL = 1e-5


@pytest.fixture(scope="module")
def setup():
    """Model, jitted functions, inputs, and the single-device results every mesh is compared with."""
    # GQA (kv heads shard 2 ways at most); layers rematerialised, log-probs in chunks of 4 (T=6 padded to 8)
    model_config = tiny_model_config(num_heads=4, num_kv_heads=2, head_dim=16, remat="full", logprob_chunk=4)
    graphdef, params = init_model(model_config, seed=0)
    rl = load_config_file(CONFIGS / "default.py").rl  # GRPO, k3 KL to the reference, one optimizer step per batch
    optimizer = make_optimizer(1e-3, 10)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, NEW_TOKENS + 1, (ROWS, 1))
    prompt_mask = np.arange(PROMPT_LEN)[None] >= rng.integers(0, PROMPT_LEN - 1, (ROWS, 1))  # left-padded
    sft_batch = {
        "prompt_tokens": rng.integers(0, 64, (ROWS, PROMPT_LEN)).astype(np.int32), "prompt_mask": prompt_mask,
        "completion_tokens": rng.integers(0, 64, (ROWS, NEW_TOKENS)).astype(np.int32),
        "completion_mask": np.arange(NEW_TOKENS)[None] < lengths,
    }
    rl_batch = RolloutBatch(**sft_batch, advantages=rng.normal(size=ROWS).astype(np.float32),
                            ref_logp=(-4.0 + 0.1 * rng.normal(size=(ROWS, NEW_TOKENS))).astype(np.float32))
    sampling = SamplingConfig(max_new_tokens=NEW_TOKENS, eos_id=1, pad_id=0, temperature=0.0)
    states = {"rl": init_train_state(params, optimizer, 0, with_reference=True),
              "sft": init_train_state(params, optimizer, 0, with_reference=False)}
    key = jax.random.key(1)

    def run_all(mesh):
        """(rl state, rl metrics, sft state, sft metrics, samples) of every function on `mesh`, with the
        model's activations constrained to it and the sampler's params in the sampling layout."""
        fns = {"rl": make_rl_update(graphdef, optimizer, rl, mesh), "sft": make_sft_step(graphdef, optimizer, mesh),
               "sample": make_sampler(graphdef, sampling, mesh),
               "continuous": make_sampler(graphdef, dataclasses.replace(sampling, slots=5), mesh)}
        fresh = lambda state: shard_state(jax.tree.map(jnp.copy, state), mesh)  # the RL update donates its state
        rl_state, rl_metrics = fns["rl"](fresh(states["rl"]), shard_batch(rl_batch, mesh), key)
        sft_state, sft_metrics = fns["sft"](fresh(states["sft"]), shard_batch(sft_batch, mesh))
        prompts = shard_batch({k: sft_batch[k] for k in ("prompt_tokens", "prompt_mask")}, mesh)
        samples = [fns[name](shard_state(params, mesh), prompts["prompt_tokens"], prompts["prompt_mask"], key)
                   for name in ("sample", "continuous")]
        return rl_state, rl_metrics, sft_state, sft_metrics, samples

    return run_all, run_all(single_device_mesh())


@pytest.mark.parametrize("shape", MESH_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_sharded_steps_match_single_device(setup, shape):
    run_all, (rl_ref, rl_metrics_ref, sft_ref, sft_metrics_ref, samples_ref) = setup
    mesh = mesh_of(shape)
    rl_state, rl_metrics, sft_state, sft_metrics, samples = run_all(mesh)

    # GRPO: same loss and metrics, same updated params and Adam moments; shardings kept
    for name in ("loss", "policy_loss", "kl", "grad_norm", "entropy"):
        assert abs(float(rl_metrics[name]) - float(rl_metrics_ref[name])) < TOL, name
    assert max_abs_diff(rl_state.params, rl_ref.params) < TOL
    assert max_abs_diff(rl_state.opt_state, rl_ref.opt_state) < TOL
    wanted = state_shardings(rl_state, mesh)
    assert all(jax.tree.leaves(jax.tree.map(lambda x, s: x.sharding.is_equivalent_to(s, x.ndim), rl_state, wanted)))

    # SFT
    assert abs(float(sft_metrics["sft/loss"]) - float(sft_metrics_ref["sft/loss"])) < TOL
    assert abs(float(sft_metrics["grad_norm"]) - float(sft_metrics_ref["grad_norm"])) < TOL
    assert max_abs_diff(sft_state.params, sft_ref.params) < TOL

    # greedy sampling, static and continuous batching (5 slots): identical tokens, same log-probs
    for got in samples:
        np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(samples_ref[0].tokens))
        np.testing.assert_array_equal(np.asarray(got.mask), np.asarray(samples_ref[0].mask))
        assert max_abs_diff(got.logps, samples_ref[0].logps) < TOL
