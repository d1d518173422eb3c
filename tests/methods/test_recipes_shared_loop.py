"""Every recipe on the shared loop starts from a pretrained model, runs on a mesh, and resumes.

The model: a tiny random Llama written as a GGUF file (F32, a byte-level BPE tokenizer; nothing
downloaded), and the Hugging Face directory the project's converter makes of it. Per recipe, a few
warm-start and training steps of its config, shrunk:

  * from the GGUF file on one device, the reference;
  * from the HF directory on one device, stopped by SIGTERM after the first training step and
    resumed: every logged number and the final parameters equal the reference's exactly;
  * from the HF directory on a 2-device mesh (data=2): every loss within 1e-5 of the reference's
    (relative; absolute `MESH_ABS_TOLERANCE` for the losses that are zero by construction).

SCoRe and self-rewarding add special tokens, so these runs also grow a pretrained embedding. That
each recipe moves the metric it targets is its own test's (tests/methods/test_<recipe>.py).
"""
from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import load_config_file, validate
from jaxrl_self.models.convert import gguf_to_hf
from jaxrl_self.recipes import build_recipe
from jaxrl_self.train.dpo import encode_preference_pairs
from jaxrl_self.train.faults import Preempted
from jaxrl_self.train.loop import fresh_state, train
from jaxrl_self.train.state import CHECKPOINTED_PART
from jaxrl_self.train.workdir import CHECKPOINT_DIR
from recipe_helpers import built
from tiny_models import build_hf_model, tokenizer_tokens, write_tiny_gguf

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = {  # name: (config file, its settings shrunk to a few steps)
    "rlvr": ("default.py", {}),
    "ttrl": ("ttrl.py", {"method.ttrl_train_samples": 2}),
    "intuitor": ("intuitor.py", {}),
    "rent": ("rent.py", {}),
    "co_reward": ("co_reward.py", {}),
    "star": ("star.py", {"method.num_problems": 8, "method.train_steps": 2, "method.hint_prompt_len": 40}),
    "rest_em": ("rest_em.py", {"method.num_problems": 8, "method.train_steps": 2}),
    "spin": ("spin.py", {"method.num_problems": 8, "method.train_steps": 2}),
    "self_rewarding": ("self_rewarding.py", {"method.num_problems": 4, "method.train_steps": 2, "method.judge_prompt_len": 64}),
    "score": ("score.py", {"method.stage1_steps": 1, "method.eval_samples": 1}),
    "absolute_zero": ("absolute_zero.py", {"method.proposals_per_kind": 2, "method.eval_tasks_per_kind": 1,
                                           "rl.micro_batches": 1, "task.max_prompt_len": 72, "rl.max_new_tokens": 48}),
}
ITERATIVE = ("star", "rest_em", "spin", "self_rewarding")
STEPS = 2  # training steps (rounds of the iterative recipes)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{"gguf": path of the tiny GGUF file, "hf": the HF directory converted from it}."""
    directory = tmp_path_factory.mktemp("tiny_llama")
    model = build_hf_model("llama", vocab_size=len(tokenizer_tokens()[0]), tie_word_embeddings=False, num_hidden_layers=1,
                           hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1)
    gguf_path = str(directory / "tiny.gguf")
    write_tiny_gguf(gguf_path, model, tensor_types={})  # F32: the HF directory holds the same numbers
    gguf_to_hf(gguf_path, str(directory / "hf"))
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield {"gguf": gguf_path, "hf": str(directory / "hf")}
    jax.config.update("jax_compilation_cache_dir", None)


def recipe_config(name: str, init_from: str, devices: int = 1):
    config_file, settings = RECIPES[name]
    config = load_config_file(CONFIGS / config_file)
    config.model.update(dict(init_from=init_from, max_position_embeddings=128))
    config.task.update(dict(digits=1, test_size=4, max_prompt_len=16))
    config.sft.update(dict(steps=2, batch_size=4, warmup_steps=0))
    config.rl.update(dict(steps=STEPS, prompts_per_step=2, group_size=2, max_new_tokens=20))
    config.eval.update(dict(num_examples=2, batch_size=2, every=1))
    config.checkpoint.every = 1
    config.log_every = 1
    if name in ITERATIVE:
        config.method.update(dict(iterations=STEPS, batch_size=8, train_batch_size=2, samples_per_prompt=2))
    if name == "absolute_zero":
        config.method.few_shot = 0
    for key, value in settings.items():
        section, field = key.split(".")
        config[section][field] = value
    config.mesh.update(dict(num_devices=devices, data=devices, fsdp=1, tensor=1))
    validate(config)
    return config


def logged_rows(workdir: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock timings."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def final_params(config, workdir: Path):
    recipe, ctx = built(config)
    ckpt = Checkpointer(workdir / CHECKPOINT_DIR, part=CHECKPOINTED_PART)
    _, state, _ = ckpt.restore_latest(lambda meta: fresh_state(ctx, recipe, meta["phase"]))
    ckpt.close()
    return jax.tree.map(np.asarray, state.params)


def run_with_sigterm(config, workdir: Path, at_rl_step: int):
    """`train` with a SIGTERM sent to this process during training step `at_rl_step`; returns after
    the loop stopped with a checkpoint (`Preempted`)."""
    recipe = build_recipe(config)
    step = recipe.step

    def step_then_signal(ctx, state, extra, rl_step, key, control):
        if rl_step == at_rl_step:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler records it; the step completes
        return step(ctx, state, extra, rl_step, key, control)

    recipe.step = step_then_signal
    with pytest.raises(Preempted):
        train(config, workdir, recipe)


def losses(rows: list[dict]) -> dict:
    """{(step, name): value} of every loss the rows log."""
    return {(row["step"], k): v for row in rows for k, v in row.items() if "loss" in k and isinstance(v, float)}


# A policy-gradient loss at ratio 1 is the mean of zero-mean advantages: zero up to rounding, and its
# rounding on the mesh reached 2.2e-5 (RENT, whose group-normalised advantages are ~1 in size), while
# the gradient norm of that step agreed to 8e-6 relative.
MESH_ABS_TOLERANCE = 5e-5


IN_SUITE = "score"  # the suite runs one recipe (~50 s); JAXRL_SELF_LONG_TESTS=1 runs them all (docs/testing.md)


@pytest.mark.parametrize("name", [name if name == IN_SUITE else pytest.param(name, marks=pytest.mark.long) for name in RECIPES])
def test_recipe_from_pretrained_on_a_mesh_and_resumed(models, tmp_path, name):
    reference = recipe_config(name, models["gguf"])
    train(reference, tmp_path / "gguf", build_recipe(reference))
    expected = logged_rows(tmp_path / "gguf")
    assert losses(expected) and all(math.isfinite(v) for v in losses(expected).values()), expected

    resumed = recipe_config(name, models["hf"])
    run_with_sigterm(resumed, tmp_path / "hf", at_rl_step=1)
    train(resumed, tmp_path / "hf", build_recipe(resumed))
    assert logged_rows(tmp_path / "hf") == expected
    jax.tree.map(np.testing.assert_array_equal, final_params(resumed, tmp_path / "hf"), final_params(reference, tmp_path / "gguf"))

    sharded = recipe_config(name, models["hf"], devices=2)
    train(sharded, tmp_path / "mesh", build_recipe(sharded))
    on_mesh = losses(logged_rows(tmp_path / "mesh"))
    assert on_mesh.keys() == losses(expected).keys()
    for key, value in losses(expected).items():
        assert on_mesh[key] == pytest.approx(value, rel=1e-5, abs=MESH_ABS_TOLERANCE), (key, value, on_mesh[key])


def _split(params):
    """({path: array} of the adapters, {path: array} of the rest) of a params tree."""
    flat = {path: np.asarray(v[...]) for path, v in nnx.to_flat_state(params)}
    adapters = {path: v for path, v in flat.items() if any(str(p).endswith("_lora") for p in path)}
    return adapters, {path: v for path, v in flat.items() if path not in adapters}


ROUND_MODES = {"bf16": {"model.param_dtype": "bfloat16"}, "lora": {"model.lora.rank": 4}}


def round_config(name: str, init_from: str, mode: str):
    config = recipe_config(name, init_from)
    for key, value in ROUND_MODES[mode].items():
        *path, field = key.split(".")
        section = config
        for part in path:
            section = section[part]
        section[field] = value
    validate(config)
    return config


@pytest.mark.parametrize("mode", sorted(ROUND_MODES))
def test_a_round_fine_tunes_bf16_params_or_lora_adapters(models, mode):
    """The rounds' SFT and DPO (recipes/iterative.py) on bf16 params (float32 master weights inside
    the round) or on a LoRA model's adapters (the base untouched, DPO's reference = the round's
    starting adapters on the same base)."""
    recipe, ctx = built(round_config("spin", models["hf"], mode))
    start = recipe.rl_state(ctx, ctx.init_params).params
    examples = ctx.train_examples[:4]
    prompts, solutions = [e.prompt for e in examples], [e.solution for e in examples]
    tuned, sft = recipe.fine_tune(ctx, start, prompts, solutions, steps=2, batch_size=2, learning_rate=1e-2, seed=0)
    pairs = encode_preference_pairs(ctx.tokenizer, prompts, solutions, solutions[1:] + solutions[:1], ctx.prompt_len, ctx.new_tokens)
    preferred, dpo = recipe.dpo_fine_tune(ctx, start, pairs, steps=2, batch_size=2, learning_rate=1e-2, beta=0.1, seed=0)
    assert math.isfinite(sft["sft/loss_last"]) and math.isfinite(dpo["dpo/loss_last"])
    assert dpo["dpo/reward_margin_first"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as its reference
    start_adapters, start_base = _split(start)
    for params in (tuned, preferred):
        adapters, base = _split(params)
        if mode == "bf16":
            matrices = [v for v in base.values() if v.ndim >= 2]
            assert matrices and all(v.dtype == jnp.bfloat16 for v in matrices)
            assert any(not np.array_equal(v, start_base[path]) for path, v in base.items())  # updates not rounded away
        else:
            jax.tree.map(np.testing.assert_array_equal, base, start_base)
            assert any(not np.array_equal(v, start_adapters[path]) for path, v in adapters.items())


@pytest.mark.long  # ~20 s: opt-in (docs/testing.md); the rounds' SFT and DPO with LoRA are tested above
def test_spin_round_trains_lora_adapters_end_to_end(models, tmp_path):
    config = round_config("spin", models["hf"], "lora")
    summary = train(config, tmp_path, build_recipe(config))
    assert set(summary["spin/heldout_margin"]) == {"after SFT", "iteration 1", "iteration 2"}
    rows = logged_rows(tmp_path)
    assert [row["dpo/reward_margin_first"] for row in rows if "dpo/reward_margin_first" in row] == pytest.approx([0.0] * STEPS, abs=1e-6)
    _, ctx = built(config)
    adapters, base = _split(final_params(config, tmp_path))
    start_adapters, start_base = _split(ctx.init_params)
    jax.tree.map(np.testing.assert_array_equal, base, start_base)
    assert any(not np.array_equal(v, start_adapters[path]) for path, v in adapters.items())
