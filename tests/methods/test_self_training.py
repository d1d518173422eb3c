"""STaR / ReST-EM (recipes/self_training.py): filtering, rationalization without the hint, and a
fixed-seed run on 1-digit addition with flawed demonstrations where one round raises held-out
greedy accuracy, started from a briefly SFT-trained tiny model loaded as a pretrained Hugging Face
checkpoint (`model.init_from`)."""
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxrl_self.config import load_config_file, validate
from jaxrl_self.recipes import build_recipe, self_training, train_and_evaluate
from recipe_helpers import pretrained_config, warm_start_params, write_pretrained
from jaxrl_self.tasks.arithmetic import ArithmeticTask
from jaxrl_self.tasks.base import Example

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_config(config_file: str, **method):
    """`configs/<config_file>` on 1-digit addition (half the demonstrations drop the carry) with a
    tiny model; warm start and M-step share one SFT step function (same steps and learning rate)."""
    config = load_config_file(CONFIGS / config_file)
    config.task.update(dict(digits=1, max_prompt_len=12, test_size=32, demo_error_rate=0.5))
    config.model.update(dict(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                             max_position_embeddings=32))
    config.rl.max_new_tokens = 16
    config.sft.update(dict(steps=150, batch_size=32, learning_rate=3e-3, warmup_steps=0))
    config.eval.update(dict(num_examples=32, batch_size=32))
    config.method.update({**dict(iterations=1, num_problems=64, batch_size=64, samples_per_prompt=8, train_steps=150,
                                 train_batch_size=32, learning_rate=3e-3, hint_prompt_len=12), **method})
    config.mesh.num_devices = 1  # one device, as the CLI on CPU (tests/conftest.py)
    validate(config)
    build_recipe(config)  # the recipe's options it does not set get their defaults
    return config


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The two runs build their own jitted functions; a persistent cache lets the second reuse the first's."""
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    yield
    jax.config.update("jax_compilation_cache_dir", None)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """The warm start of the tiny config, as a Hugging Face directory."""
    config = tiny_config("rest_em.py")
    return write_pretrained(config, warm_start_params(config), tmp_path_factory.mktemp("pretrained"))


def test_keep_verified_dedupes_caps_and_filters():
    task = ArithmeticTask(digits=1)
    example = Example("3+4=", "7")
    outs = ["<answer>7</answer>", "<answer>8</answer>", "<answer>7</answer>", "<think>3+4=7</think><answer>7</answer>", "<answer> 7</answer>"]
    assert self_training.keep_verified(task, [example], [outs], max_per_problem=2) == [[outs[0], outs[3]]]
    fits = lambda text: len(text) < 20
    assert self_training.keep_verified(task, [example], [outs], max_per_problem=5, fits=fits) == [[outs[0], outs[4]]]
    assert self_training.keep_verified(task, [example], [["<answer>8</answer>"]], max_per_problem=5) == [[]]


def test_rationalization_keeps_hinted_rationales_without_the_hint(monkeypatch):
    config = tiny_config("star.py", num_problems=2, samples_per_prompt=2, max_per_problem=1)
    problems = [Example("3+9=", "12", "", 0), Example("5+8=", "13", "", 1)]
    seen_prompts = []

    def generate(sampler, params, prompts, key, batch_size, prompt_len=None):
        seen_prompts.append(list(prompts))
        # unhinted: both wrong; hinted: only the first problem reaches its gold answer
        return [["<answer>2</answer>"] * 2 if not p.startswith("<answer>") else
                (["<answer>12</answer>"] * 2 if "3+9=" in p else ["<answer>3</answer>"] * 2) for p in prompts]

    captured = {}

    def fine_tune(ctx, params, prompts, completions, **kwargs):
        captured.update(prompts=prompts, completions=completions, steps=kwargs["steps"])
        return params, {}

    recipe = SimpleNamespace(fine_tune=fine_tune)
    ctx = SimpleNamespace(config=config, train_examples=problems, root_key=jax.random.key(0), task=ArithmeticTask(digits=1),
                          sampler=lambda *args, **kwargs: None, generate=generate, fits=lambda text: True)
    _, metrics = self_training.self_training_round(recipe, ctx, 2, None, None)
    assert seen_prompts[1] == ["<answer>12</answer>3+9=", "<answer>13</answer>5+8="]  # the gold answer as a hint
    assert captured["prompts"] == ["3+9="] and captured["completions"] == ["<answer>12</answer>"]  # stored without the hint
    assert captured["steps"] == round(config.method.train_steps * 1.2)  # STaR: steps grow 20% per outer loop
    assert metrics["self_training/solved_fraction"] == 0.0 and metrics["self_training/rationalized_fraction"] == 0.5


@pytest.mark.parametrize("config_file,method", [("rest_em.py", {}), ("star.py", dict(max_per_problem=1))])
def test_one_round_raises_heldout_accuracy(pretrained, tmp_path, config_file, method):
    config = pretrained_config(tiny_config(config_file, **method), pretrained)
    summary = train_and_evaluate(config, tmp_path / "run")
    before, after = summary["eval/accuracy"]["after SFT"], summary["eval/accuracy"]["iteration 1"]
    assert after >= before + 0.1, summary
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and (tmp_path / "run" / "report.md").exists()  # the start's evaluation, the round's
    assert np.isfinite(summary["eval/format_ok"]["iteration 1"])
