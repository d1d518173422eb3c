"""Iterative recipes that run their own outer loop instead of the RL loop.

`jaxrl-self train` calls `run_method(config, workdir)` when `config.method.loop` is set. A recipe
registers itself here with one line: loop name -> module exposing `run_method(config, workdir) ->
summary dict`.
"""
from __future__ import annotations

import importlib

from jaxrl_self.config import ConfigError

LOOPS = {
    "star": "jaxrl_self.methods.self_training",
    "rest_em": "jaxrl_self.methods.self_training",
    "spin": "jaxrl_self.methods.spin",
    "self_rewarding": "jaxrl_self.methods.self_rewarding",
    "score": "jaxrl_self.methods.score",
    "absolute_zero": "jaxrl_self.methods.absolute_zero",
}


def run_method(config, workdir) -> dict:
    """Runs the recipe named by `config.method.loop`; returns its summary."""
    name = config.method.loop
    if name not in LOOPS:
        raise ConfigError(f"config.method.loop: unknown iterative recipe {name!r}; expected one of {sorted(LOOPS)}")
    return importlib.import_module(LOOPS[name]).run_method(config, workdir)
