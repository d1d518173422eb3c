"""Shared fixtures for the learner tests: `tiny_config` (a tiny model on 1-digit addition), a model
briefly warm-started by SFT once per session (`warm_params`), and `run_rl_from` to run the real RL
loop from it.

A persistent XLA compilation cache (a temporary directory, this session only) lets the runs of
the different algorithms share the compiled sampler and evaluator instead of compiling each anew.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jaxrl_self.config import load_config_file, validate
from recipe_helpers import train_from_params, warm_start_params
from tiny_job import persistent_compilation_cache

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SFT_STEPS = 150


def make_tiny_config(algorithm: str = "grpo", config_file: str = "default.py"):
    """`configs/<config_file>` shrunk to a tiny model on 1-digit addition (completions <= 16 tokens)."""
    config = load_config_file(CONFIGS / config_file)
    config.rl.algorithm = algorithm
    config.task.update(dict(digits=1, max_prompt_len=8, test_size=8))
    config.model.update(dict(hidden_size=64, num_layers=1, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
                             max_position_embeddings=32))
    config.sft.update(dict(steps=SFT_STEPS, batch_size=32, learning_rate=3e-3, warmup_steps=5))
    config.rl.update(dict(steps=12, prompts_per_step=8, max_new_tokens=16))
    config.eval.update(dict(num_examples=8, batch_size=8, every=1000))
    config.checkpoint.every = 1000
    config.log_every = 1000
    config.mesh.num_devices = 1  # one device, as the CLI on CPU (tests/conftest.py)
    validate(config)
    return config


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent compilation cache for this session (reset so that it applies even when other
    tests compiled before it was set)."""
    with persistent_compilation_cache(tmp_path_factory.mktemp("xla_cache")):
        yield


@pytest.fixture(scope="session")
def warm_params():
    """Policy params after SFT_STEPS steps of SFT on worked 1-digit additions (shared, read-only)."""
    return warm_start_params(make_tiny_config())


def rl_rows_from(params, config, workdir: Path) -> list[dict]:
    """`train_and_evaluate` from `params` as the SFT result (only the RL loop runs); returns the RL
    steps' metrics rows."""
    train_from_params(config, workdir, params, after_sft={"eval/accuracy": 0.0})
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "reward/mean" in row]


@pytest.fixture(scope="session")
def configs_dir() -> Path:
    return CONFIGS


@pytest.fixture(scope="session")
def tiny_config():
    return make_tiny_config


@pytest.fixture(scope="session")
def run_rl_from():
    return rl_rows_from
