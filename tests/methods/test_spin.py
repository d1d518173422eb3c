"""SPIN (recipes/spin.py): pair construction, and a fixed-seed round on 1-digit addition from a
briefly SFT-trained tiny model, loaded as a pretrained Hugging Face checkpoint (`model.init_from`),
that raises the held-out margin of the worked solutions over the model's own generations without
lowering held-out accuracy."""
from pathlib import Path
from types import SimpleNamespace

from jaxrl_self.config import load_config_file, validate
from jaxrl_self.recipes import spin, train_and_evaluate
from jaxrl_self.tasks.base import Example
from recipe_helpers import pretrained_config, warm_start_params, write_pretrained

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def tiny_config():
    config = load_config_file(CONFIGS / "spin.py")
    config.task.update(dict(digits=1, max_prompt_len=8, test_size=32))
    config.model.update(dict(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                             max_position_embeddings=32))
    config.rl.max_new_tokens = 16
    config.sft.update(dict(steps=60, batch_size=32, learning_rate=3e-3, warmup_steps=0))
    config.eval.update(dict(num_examples=32, batch_size=32))
    config.method.update(dict(iterations=1, num_problems=64, batch_size=64, train_steps=40, train_batch_size=32, learning_rate=3e-4))
    config.mesh.num_devices = 1  # one device, as the CLI on CPU (tests/conftest.py)
    validate(config)
    return config


def test_self_play_pairs_drop_identical_and_too_long():
    ws = SimpleNamespace(fits=lambda text: len(text) < 30)
    example = Example("3+4=", "7", "<answer>7</answer>")
    generated = [["<answer>7</answer>", "<answer>8</answer>", "<think>" + "1" * 30 + "</think>"]]
    prompts, chosen, rejected, identical = spin.self_play_pairs(ws, [example], generated)
    assert (prompts, chosen, rejected, identical) == (["3+4="], ["<answer>7</answer>"], ["<answer>8</answer>"], 1)


def test_one_round_raises_the_heldout_margin_without_losing_accuracy(tmp_path):
    config = tiny_config()
    pretrained = write_pretrained(config, warm_start_params(config), tmp_path / "pretrained")
    summary = train_and_evaluate(pretrained_config(config, pretrained), tmp_path / "run")
    margin, accuracy = summary["spin/heldout_margin"], summary["eval/accuracy"]
    assert margin["iteration 1"] > margin["after SFT"] + 0.5, summary
    assert accuracy["iteration 1"] >= accuracy["after SFT"], summary
