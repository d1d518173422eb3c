"""A reward of your own: `config.rl.reward = "my_module:my_reward"` (docs/rewards.md).

The named object is a plain Python function of a batch,

    reward(completions: list[str], prompts: list[str], references: list[str]) -> list[float]

(row i: completion i, the prompt it answers and that prompt's reference), one number per row. It
runs on the host through the same callback as the task's verifiers (`rewards.host`), with the same
failure containment: a call that raises or returns anything but N finite numbers gives those rows
0, counts them in `verifier_failures/<reason>` and logs the first failure of each reason once.

The string is the config value, so it is recorded in the run's `config.json`: a resumed run and
`run_scorer` (evaluation of the run) use the same function. The module is imported when the run
starts (`load_reward`), before any training; a name that cannot be imported is a ConfigError.

Components: "reward" is the function's value; "correct" is the same value (so `accuracy/train`
and the held-out accuracy are the mean reward); "format_ok" is 1 for the rows the function scored.
"""
from __future__ import annotations

import importlib
import re
from typing import Callable, Mapping, Sequence

from jaxrl_self.config import ConfigError
from jaxrl_self.methods.base import RewardMethod
from jaxrl_self.rewards.host import _OK, _score_batch, make_host_batch_reward_fn

_IDENTIFIER = r"[A-Za-z_]\w*"
REWARD_SPEC = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*")
MAX_CACHED_PROMPTS = 100_000


def is_custom(name: str) -> bool:
    """Whether `config.rl.reward` names a function ("module:function") rather than a built-in method."""
    return ":" in name


def load_reward(spec: str) -> Callable:
    """The function `spec` = "module.path:function" names (ConfigError naming config.rl.reward if it
    cannot be imported or is not callable)."""
    if not REWARD_SPEC.fullmatch(spec):
        raise ConfigError(f"config.rl.reward: {spec!r} is not 'module:function' (e.g. 'my_pkg.rewards:length_reward')")
    module_name, attribute = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise ConfigError(f"config.rl.reward: cannot import the module {module_name!r} of {spec!r} "
                              f"(is it on PYTHONPATH?): {error}") from error
        raise ConfigError(f"config.rl.reward: importing {module_name!r} failed: {error!r}") from error
    except Exception as error:  # the user's module failed while importing
        raise ConfigError(f"config.rl.reward: importing {module_name!r} failed: {error!r}") from error
    target = module
    for name in attribute.split("."):
        if not hasattr(target, name):
            raise ConfigError(f"config.rl.reward: the module {module_name!r} has no {attribute!r} (from {spec!r})")
        target = getattr(target, name)
    if not callable(target):
        raise ConfigError(f"config.rl.reward: {spec!r} is a {type(target).__name__}, not a function "
                          "(completions, prompts, references) -> rewards")
    return target


class CustomReward(RewardMethod):
    """The reward function `config.rl.reward` names, run on the host (module docstring)."""

    def __init__(self, config, task, tokenizer):
        self.name = config.rl.reward
        self.reward = load_reward(config.rl.reward)
        self._tokenizer = tokenizer
        self._prompt_of_ids: dict[tuple[int, ...], str] = {}  # token ids -> the prompt text they encode
        self._host_fn = make_host_batch_reward_fn(self.reward, tokenizer.decode, self._prompt_text)

    def prompts(self, examples):
        prompts = super().prompts(examples)
        if len(self._prompt_of_ids) > MAX_CACHED_PROMPTS:
            self._prompt_of_ids.clear()
        for prompt in prompts:  # so the reward sees each prompt exactly as written, not re-decoded
            self._prompt_of_ids[tuple(self._tokenizer.encode(prompt))] = prompt
        return prompts

    def _prompt_text(self, ids: Sequence[int]) -> str:
        """The prompt whose (BOS +) encoding is `ids`, or their decoding for a prompt not seen."""
        ids = tuple(ids)
        bos = self._tokenizer.bos_id
        for key in (ids, ids[1:] if ids[:1] == (bos,) else None):
            if key is not None and key in self._prompt_of_ids:
                return self._prompt_of_ids[key]
        return self._tokenizer.decode(list(ids))

    def reward_fn(self, batch, reference_bytes):
        out = self._host_fn(batch["completion_tokens"], batch["completion_mask"], batch["prompt_tokens"],
                            batch["prompt_mask"], reference_bytes)
        return {"reward": out["reward"], "correct": out["reward"], "format_ok": out["scored"],
                "verifier_failures": out["verifier_failures"]}


def run_scorer(config, task) -> Callable[..., Mapping[str, float]]:
    """How a run's completions are scored outside training (evaluation of the run).

    `score(completion, reference, prompt="") -> {"reward", "correct", "format_ok"}`: the task's own
    verifier (`prompt` unused), or, when `config.rl.reward` names a function, that function on
    the one row, with the same components as in training ("correct" = the reward) and the same
    containment (a failure scores 0 and logs its first traceback once).
    """
    name = config.rl.get("reward", "verifier") if config.get("rl") else "verifier"
    if not is_custom(name):
        return lambda completion, reference, prompt="": task.score(completion, reference)
    reward = load_reward(name)

    def score(completion: str, reference: str, prompt: str = "") -> dict[str, float]:
        rewards, reasons = _score_batch(reward, [completion], [prompt], [reference])
        ok = float(reasons[0] == _OK)
        return {"reward": float(rewards[0]), "correct": float(rewards[0]), "format_ok": ok}

    return score

