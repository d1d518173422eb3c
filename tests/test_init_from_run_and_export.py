"""A run's checkpoint as a starting model (`config.model.init_from = "<run dir>"`, or
"<run dir>/best_checkpoint") and as a Hugging Face directory (`jaxrl-self export`), on the
shared tiny reference run (docs/runs.md)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tiny_models import hf_logits, jax_logits
from tiny_job import REPO, assert_same_state, cache_dir, checkpoint_steps, child_env, load_state, reference_run, train


def _params(state: dict) -> dict:
    return {name: value for name, value in state.items() if name.startswith("['params']")}


@pytest.mark.parametrize("which", ["checkpoints", "best_checkpoint"])
def test_init_from_a_run_starts_from_its_checkpoint(tmp_path_factory, which):
    source = reference_run(tmp_path_factory)
    init_from = source if which == "checkpoints" else source / which
    root = tmp_path_factory.mktemp("init_from")
    # no training: the run's first checkpoint (step 0) holds its initial params
    result = train(root / "run", cache_dir(tmp_path_factory), f"--config.model.init_from={init_from}",
                   "--config.sft.steps=0", "--config.rl.steps=0")
    workdir = root / "run"
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loading the model {init_from} onto 1 device(s) ..." in result.stderr  # before the load, not only after
    assert "M parameters in" in result.stderr
    source_state = load_state(source / which, checkpoint_steps(source / which)[-1])
    assert_same_state(_params(load_state(workdir / "checkpoints", 0)), _params(source_state))


def _export(run, out, *extra):
    return subprocess.run([sys.executable, "-m", "jaxrl_self.cli", "export", str(run), str(out), *extra], cwd=REPO,
                          env=child_env(out.parent / "xla_cache"), capture_output=True, text=True, timeout=600)


def test_export_loads_in_transformers_with_the_same_logits(tmp_path_factory, tmp_path):
    import transformers

    from jaxrl_self.recipes.runs import load_run

    source = reference_run(tmp_path_factory)
    result = _export(source, tmp_path / "hf")
    assert result.returncode == 0, result.stderr[-3000:]
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    run, params = load_run(source, "latest")
    text = run.test_examples[0].prompt + run.test_examples[0].solution
    ids = [run.tokenizer.bos_id, *run.tokenizer.encode(text)]
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert hf_tokenizer.eos_token_id == run.tokenizer.eos_id
    diff = float(np.max(np.abs(jax_logits(run.graphdef, params, ids) - hf_logits(tmp_path / "hf", ids))))
    print(f"export max abs logit difference: {diff:.2e}")
    assert diff < 1e-4

    again = _export(source, tmp_path / "hf")
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("jaxrl-self: error: output directory")
    missing = _export(tmp_path / "no_run", tmp_path / "other")
    assert missing.returncode == 2 and "is not a run directory" in missing.stderr.strip().splitlines()[-1]
