"""Recipes: what a run trains, composed on the shared outer loop (`train.loop.train`).

`config.method.loop` names the recipe ("" = RL with `config.rl.reward`, the default job), or a
recipe of your own as "module:Class" (the module importable, e.g. on PYTHONPATH). Each recipe is
a `train.loop.Recipe`; the project's register here with one line. docs/recipes.md shows how to
write one.
"""
from __future__ import annotations

import importlib

from jaxrl_self.config import ConfigError
from jaxrl_self.train.loop import Recipe, train

RECIPES = {  # method.loop -> "module:class"
    "": "jaxrl_self.recipes.rlvr:RLVR",
    "star": "jaxrl_self.recipes.self_training:SelfTraining",
    "rest_em": "jaxrl_self.recipes.self_training:SelfTraining",
    "spin": "jaxrl_self.recipes.spin:SPIN",
    "self_rewarding": "jaxrl_self.recipes.self_rewarding:SelfRewarding",
    "score": "jaxrl_self.recipes.score:SCoRe",
    "absolute_zero": "jaxrl_self.recipes.absolute_zero:AbsoluteZero",
    "spiral": "jaxrl_self.recipes.spiral:SPIRAL",
}


def build_recipe(config) -> Recipe:
    """The recipe `config.method.loop` names, checked against the config (ConfigError)."""
    name = config.method.get("loop", "") if config.get("method") else ""
    if name not in RECIPES and ":" not in name:
        raise ConfigError(f"config.method.loop: unknown recipe {name!r}; expected one of {sorted(RECIPES)} or 'module:Class'")
    module, cls = RECIPES.get(name, name).split(":")
    try:
        recipe = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"config.method.loop: cannot load the recipe {name!r}: {error}") from error
    if not (isinstance(recipe, type) and issubclass(recipe, Recipe)):
        raise ConfigError(f"config.method.loop: {name!r} is not a jaxrl_self.train.loop.Recipe subclass")
    return recipe(config)


def train_and_evaluate(config, workdir) -> dict:
    """Runs (or resumes) the recipe of `config` in `workdir` (`train.loop.train`); returns its summary."""
    return train(config, workdir, build_recipe(config))
