"""The recipe of docs/recipes.md (docs/examples/raft_recipe.py) runs on the shared loop, named in a
config as "module:Class", and raises the training accuracy of its samples from a briefly
warm-started tiny model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jaxrl_self.config import ConfigError
from jaxrl_self.recipes import build_recipe
from recipe_helpers import train_from_params

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_the_example_recipe_learns(warm_params, tiny_config, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    config = tiny_config()
    config.method.loop = "raft_recipe:RAFT"
    config.rl.update(dict(steps=16, learning_rate=1e-3))
    summary = train_from_params(config, tmp_path, warm_params, recipe=build_recipe(config))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    accuracy = [row["accuracy/train"] for row in rows if "accuracy/train" in row]
    assert len(accuracy) == config.rl.steps
    assert np.mean(accuracy[-4:]) > np.mean(accuracy[:4]) + 0.05, accuracy
    assert 0 <= summary["eval/accuracy"]["after RL"] <= 1


def test_a_recipe_that_cannot_be_loaded_is_a_config_error(tiny_config):
    config = tiny_config()
    config.method.loop = "no_such_module:Recipe"
    with pytest.raises(ConfigError, match="cannot load the recipe"):
        build_recipe(config)
    config.method.loop = "jaxrl_self.config:ConfigError"
    with pytest.raises(ConfigError, match="not a jaxrl_self.train.loop.Recipe"):
        build_recipe(config)
