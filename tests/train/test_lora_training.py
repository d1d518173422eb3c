"""LoRA training (docs/lora.md): the optimizer holds state for the adapters only, the reference is the
same base with the adapters it started from (the base's own log-probs for fresh adapters), an RL
update leaves the base bit-identical, and a GRPO run of the tiny job saves adapter-only checkpoints
and resumes from one exactly; with a quantized base (docs/lora.md#quantized-base) as well, whose
blocks the updates leave as they are; with adapter dropout (docs/lora.md#adapter-dropout) the update
draws its masks from its key alone (same key, same update) and the reference has none."""
from __future__ import annotations

import dataclasses
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from test_rl_step import B, VOCAB, rl_config, rollout

from safetensors import safe_open

from jaxrl_self import cli
from jaxrl_self.config import ConfigError
from jaxrl_self.train.run_dir import load_model
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.models.config import ModelConfig
from jaxrl_self.models.lora import LoRAConfig, join_adapters, split_adapters
from jaxrl_self.models.transformer import cast_matrices, dequantized_base
from jaxrl_self.train.policy import completion_logprobs
from jaxrl_self.train.dpo import make_dpo_step, make_pair_scorer
from jaxrl_self.train.rl_step import make_batch_builder, make_rl_update
from jaxrl_self.train.sft import make_sft_step, sft_loss
from jaxrl_self.train.state import init_model, init_train_state, make_optimizer
from tiny_job import TINY, assert_same_state, checkpoint_steps, load_state, metrics_rows

pytestmark = pytest.mark.usefixtures("fast_compile")  # compile-bound (tests/conftest.py)
BASE = ModelConfig(vocab_size=VOCAB, hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                   intermediate_size=32, max_position_embeddings=32)


def size(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("param_dtype, remat, quantization, dropout", [("float32", "none", "", 0.0), ("bfloat16", "full", "", 0.0),
                                                                       ("float32", "full", "q4_1", 0.0),
                                                                       ("float32", "full", "", 0.1)])
def test_update_trains_adapters_only_against_the_base_as_reference(param_dtype, remat, quantization, dropout):
    base = dataclasses.replace(BASE, hidden_size=32, head_dim=32) if quantization else BASE  # whole blocks of 32
    base = dataclasses.replace(base, scan_layers=dropout > 0)  # dropout's layer keys through the layer scan
    config = dataclasses.replace(base, lora=LoRAConfig(rank=2, alpha=4.0, dropout=dropout, base_quantization=quantization),
                                 remat=remat)
    graphdef, params = init_model(config, seed=0)
    base_graphdef, base_params = init_model(base, seed=0)
    if quantization:  # the base the model computes with: its dequantized blocks
        base_params = split_adapters(dequantized_base(params, config)[0])[1]
    rl = rl_config("grpo", learning_rate=1e-2)
    optimizer = make_optimizer(1e-2, 10)
    state = init_train_state(params, optimizer, 0, with_reference=True, param_dtype=param_dtype)
    adapters, frozen = split_adapters(state.params)
    # optimizer state: Adam's two moments of the adapters (and step counters), nothing of the base
    assert 2 * size(adapters) <= size(state.opt_state) <= 2 * size(adapters) + 4
    assert size(state.ref_params) == size(adapters) < size(frozen) / 4  # the reference: the adapters, not a 2nd base
    stored = {jnp.dtype(param_dtype)} if not quantization else {jnp.dtype(jnp.uint8), jnp.dtype(jnp.float16),
                                                                    jnp.dtype(param_dtype)}  # blocks; the embedding
    assert {x.dtype for x in jax.tree.leaves(frozen) if x.ndim >= 2} == stored  # the stored base
    assert {x.dtype for x in jax.tree.leaves(adapters)} == {jnp.dtype(jnp.float32)}

    batch, rewards = rollout()
    train_batch, _ = make_batch_builder(graphdef, rl, RewardMethod())(state, batch, rewards, jnp.ones(B, bool), jax.random.key(0))
    args = (batch["prompt_tokens"], batch["prompt_mask"], batch["completion_tokens"], batch["completion_mask"], rl.temperature)
    base_logp = jax.jit(lambda p: completion_logprobs(nnx.merge(base_graphdef, p), *args)[0])(
        cast_matrices(base_params, param_dtype))
    np.testing.assert_array_equal(train_batch.ref_logp, base_logp)

    before = jax.device_get(state)  # the update donates `state`
    update = make_rl_update(graphdef, optimizer, rl)
    for step in range(2):
        state, metrics = update(state, train_batch, jax.random.key(step))
        assert np.isfinite(float(metrics["loss"])) and not float(metrics["skipped_nonfinite"])
    if dropout:  # the masks come from the step's key: the same key gives the same update, another key another
        first = split_adapters(update(jax.device_put(before), train_batch, jax.random.key(0))[0].params)[0]
        again = split_adapters(update(jax.device_put(before), train_batch, jax.random.key(0))[0].params)[0]
        other = split_adapters(update(jax.device_put(before), train_batch, jax.random.key(5))[0].params)[0]
        jax.tree.map(np.testing.assert_array_equal, first, again)
        assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(first), jax.tree.leaves(other)))
    new_adapters, new_frozen = split_adapters(state.params)
    jax.tree.map(np.testing.assert_array_equal, new_frozen, split_adapters(before.params)[1])  # the base is frozen
    assert max(float(np.max(np.abs(b))) for path, b in nnx.to_flat_state(new_adapters) if path[-1] == "b") > 1e-4
    jax.tree.map(np.testing.assert_array_equal, state.ref_params, before.ref_params)
    assert float(metrics["kl"]) > 0  # the policy moved away from its reference
    # the reference's log-probs are still the base's
    rebuilt, _ = make_batch_builder(graphdef, rl, RewardMethod())(state, batch, rewards, jnp.ones(B, bool), jax.random.key(0))
    np.testing.assert_array_equal(rebuilt.ref_logp, train_batch.ref_logp)


@pytest.mark.parametrize("quantization, dropout", [("", 0.0), ("q4_0", 0.1)])
def test_grpo_run_saves_adapter_only_checkpoints_and_resumes_exactly(tmp_path, quantization, dropout):
    """The tiny job (SFT then GRPO with a KL term) with rank-4 adapters, on a float32 base, or on a
    Q4_0 base with adapter dropout 0.1 (in the SFT and GRPO steps); resumed from its step-4
    checkpoint, it ends bit-identical to the uninterrupted run."""
    lora = ["--config.model.lora.rank=4", "--config.rl.kl_coef=0.05", "--config.rl.steps=4",
            "--config.checkpoint.max_to_keep=5", f"--config.model.lora.dropout={dropout}"]
    if quantization:  # head_dim 32: o_proj's input in whole blocks
        lora += [f"--config.model.lora.base_quantization={quantization}", "--config.model.head_dim=32"]
    workdir = tmp_path / "run"
    assert cli.main(["train", "--workdir", str(workdir), *TINY, *lora]) == 0
    final = 8  # 4 SFT + 4 RL steps
    assert checkpoint_steps(workdir / "checkpoints") == [2, 4, 6, 8]
    state = load_state(workdir / "checkpoints", final)
    params = [name for name in state if name.startswith("['params']")]
    assert params and all("_lora" in name for name in params), params  # no base tensor in a checkpoint
    assert not any("_lora" not in name for name in state if name.startswith("['ref_params']"))
    assert sum(p.stat().st_size for p in (workdir / "checkpoints" / str(final)).rglob("*") if p.is_file()) < 10 * 2**20

    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    for step in (6, 8):
        shutil.rmtree(resumed / "checkpoints" / str(step))
    assert cli.main(["train", "--workdir", str(resumed), *TINY, *lora]) == 0
    assert metrics_rows(resumed) == metrics_rows(workdir)
    losses = [row[name] for row in metrics_rows(workdir) for name in ("sft/loss", "loss") if name in row]
    assert len(losses) >= 8 and all(isinstance(x, float) and np.isfinite(x) for x in losses), losses
    assert_same_state(load_state(resumed / "checkpoints", final), state)

    # export: the merged model (no adapter tensor), or the adapters alone in the PEFT layout
    assert cli.main(["export", str(workdir), str(tmp_path / "merged")]) == 0
    with safe_open(str(tmp_path / "merged" / "model.safetensors"), framework="numpy") as f:
        assert "model.layers.0.mlp.up_proj.weight" in f.keys() and not any("lora" in name for name in f.keys())
    assert cli.main(["export", str(workdir), str(tmp_path / "adapter"), "--peft"]) == 0
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), framework="numpy") as f:
        b = f.get_tensor("base_model.model.model.layers.0.mlp.up_proj.lora_B.weight")
    np.testing.assert_array_equal(b, state["['params']['layers']['0']['mlp']['up_proj_lora']['b']['value']"].T)
    with pytest.raises(ConfigError, match="is a LoRA run"):  # a new run cannot start from adapters alone
        load_model(str(workdir))


def test_sft_and_dpo_steps_drop_adapter_inputs_by_state_key_and_step():
    """Adapter dropout in the SFT step and the DPO step's policy side: the masks come from
    `state.key` folded with `state.step` (the same state gives the same step, the next step number
    another loss), and DPO's reference log-probs stay those of the forward without dropout."""
    config = dataclasses.replace(BASE, lora=LoRAConfig(rank=2, alpha=4.0, dropout=0.3))
    graphdef, params = init_model(config, seed=0)
    adapters, frozen = split_adapters(params)
    leaves, tree = jax.tree.flatten(adapters)  # B no longer zero: the masks change the forward
    params = join_adapters(frozen, jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(jax.random.key(i), x.shape)
                                                             for i, x in enumerate(leaves)]))
    batch, _ = rollout()
    sft_batch = {k: batch[k] for k in ("prompt_tokens", "prompt_mask", "completion_tokens", "completion_mask")}
    optimizer = make_optimizer(1e-2, 10)
    state = init_train_state(params, optimizer, 0, with_reference=True)
    plain = float(jax.jit(lambda p: sft_loss(nnx.merge(graphdef, p), sft_batch)[0])(state.params))  # no key: no dropout
    sft = make_sft_step(graphdef, optimizer)  # not donated: `state` can be stepped again
    loss = lambda state: float(sft(state, sft_batch)[1]["sft/loss"])
    first = loss(state)
    assert first == loss(state) and first != plain and np.isfinite(first)
    assert loss(state.replace(step=state.step + 1)) != first

    pairs = {"prompt_tokens": batch["prompt_tokens"], "prompt_mask": batch["prompt_mask"],
             "chosen_tokens": batch["completion_tokens"], "chosen_mask": batch["completion_mask"],
             "rejected_tokens": (batch["completion_tokens"] + 1) % VOCAB, "rejected_mask": batch["completion_mask"]}
    ref_chosen, _ = make_pair_scorer(graphdef)(state.params, pairs)  # the reference = the policy at the start
    metrics = make_dpo_step(graphdef, optimizer, beta=0.5)(state, pairs)[1]
    assert abs(float(metrics["dpo/chosen_logp"]) - float(jnp.mean(ref_chosen))) > 1e-3  # the policy's forward: dropout
    reference = float(metrics["dpo/chosen_logp"]) - float(metrics["dpo/chosen_reward"]) / 0.5
    np.testing.assert_allclose(reference, float(jnp.mean(ref_chosen)), rtol=1e-5)  # the reference's: none
