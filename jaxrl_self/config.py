"""Config files, command-line overrides and validation with messages for people.

A config is an `ml_collections.ConfigDict` returned by `get_config()` in a Python file. Overrides
come as `--config.a.b=value`; the value is parsed as a Python literal when it looks like one and
must match the type of the existing field. Anything wrong raises `ConfigError` naming the key.

Every config goes through `validate`, however it is built (`load_config_file`, `build_config`, or
changed in Python and then validated): its keys must be those of `configs/default.py` plus the
`RECIPE_KEYS` that recipes add, so that a typo is an error rather than a silently unused field.
"""
from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import json
import math
import re
from pathlib import Path
from typing import Sequence

import ml_collections

from jaxrl_self.algorithms.aggregation import AGGREGATION_MODES
from jaxrl_self.algorithms.losses import NFT_WEIGHTINGS
from jaxrl_self.algorithms.registry import ALGORITHMS, algorithm_of
from jaxrl_self.errors import ConfigError  # noqa: F401 (re-exported: jaxrl_self.config.ConfigError)
from jaxrl_self.models.config import ATTENTION_IMPLEMENTATIONS, REMAT_MODES
from jaxrl_self.models.lora import TARGETS as LORA_TARGETS, parse_targets as parse_lora_targets
from jaxrl_self.models.quantized import BLOCK as QUANTIZATION_BLOCK, FORMATS as QUANTIZATION_FORMATS, misaligned_inputs
from jaxrl_self.tasks import arithmetic, word_arithmetic
from jaxrl_self.tasks.jsonl import ANSWER_FORMATS, PROMPT_PLACEHOLDER

RL_ALGORITHMS = tuple(ALGORITHMS)
TASKS = ("arithmetic", "arithmetic_mixed", "countdown", "word_arithmetic", "jsonl", "tfds")
CURRICULA = ("uniform", "sec")  # config.curriculum.name (docs/curricula.md)
# config.rl.reward: the built-in reward methods (jaxrl_self/methods METHODS), or a reward function of
# your own as "module.path:function" (imported when the run starts; docs/rewards.md)
REWARD_METHODS = ("verifier", "ttrl", "intuitor", "rent", "co_reward")
REWARD_FUNCTION = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
MAX_SEED = 2**32 - 1  # seeds are unsigned 32-bit integers (JAX keys, NumPy generators)
NAN_TEST_HOOK = "JAXRL_SELF_TEST_NAN_AT"  # "5,7": RL steps (global numbering) whose loss a test makes NaN


DEFAULT_CONFIG_FILE = Path(__file__).resolve().parent.parent / "configs" / "default.py"

# Keys a config may add to those of configs/default.py, with their types: options of the data tasks
# that the default job does not use. `config.method` may also hold the options of the recipe in use,
# which the recipe declares with their defaults (`Recipe.config_defaults`, `check_recipe_keys`).
# Any other key is a typo.
RECIPE_KEYS = {
    # word_arithmetic, jsonl and tfds tasks (tasks/registry.py)
    "task": dict(answer_format=str, train_file=str, test_file=str, dataset=str, data_dir=str, prompt_field=str,
                 answer_field=str, template=str, category_field=str),
}
# The keys each data task needs besides those of configs/default.py
TASK_KEYS = {
    "word_arithmetic": ("answer_format",),
    "jsonl": ("train_file", "test_file", "prompt_field", "answer_field", "answer_format", "template"),
    "tfds": ("dataset", "data_dir", "prompt_field", "answer_field", "answer_format", "template"),
}
# The options each task reads besides name, seed, test_size, max_prompt_len, max_reference_len and
# chat_template; a config that sets another task's option (to other than its default) is refused
TASK_OPTIONS = {
    "arithmetic": ("digits", "ops", "demo_error_rate", "show_work", "self_check", "check_error_rate"),
    "arithmetic_mixed": ("digits", "ops", "demo_error_rate", "show_work"),
    "countdown": ("num_numbers", "max_number", "max_target"),
    "word_arithmetic": ("digits", "ops", "answer_format"),
    "jsonl": (*TASK_KEYS["jsonl"], "category_field"),
    "tfds": (*TASK_KEYS["tfds"], "category_field"),
}
# Keys that moved: old dotted key -> what to write instead (a ConfigError says so)
RENAMED_KEYS = {
    "rl.gamma": "config.rl.ppo.gamma", "rl.gae_lambda": "config.rl.ppo.gae_lambda",
    "rl.value_coef": "config.rl.ppo.value_coef", "rl.value_clip_eps": "config.rl.ppo.value_clip_eps",
    "rl.group_baseline": "config.rl.reinforce_pp.group_baseline",
    "rl.max_resample_rounds": "config.rl.dapo.max_resample_rounds",
    "train": "config.faults", "train.max_consecutive_nonfinite": "config.faults.max_consecutive_nonfinite",
    "train.debug_inject_nan_at_steps": f"the environment variable {NAN_TEST_HOOK} (a test hook, not a setting)",
}


def _run_config_file(path: str | Path) -> ml_collections.ConfigDict:
    """`get_config()` of the file at `path`, as written (not validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"_jaxrl_self_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # a config file is user code: report, do not crash deep inside
        raise ConfigError(f"config file {path} failed to load: {type(error).__name__}: {error}") from error
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config() function")
    try:
        config = module.get_config()
    except Exception as error:
        raise ConfigError(f"get_config() in {path} failed: {type(error).__name__}: {error}") from error
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() in {path} must return an ml_collections.ConfigDict, got {type(config).__name__}")
    return config


def load_config_file(path: str | Path) -> ml_collections.ConfigDict:
    """The validated config of the file at `path`: raises ConfigError for an unknown key (naming the
    file) or a bad value, as the CLI does. A caller may change the config and `validate` it again."""
    config = _run_config_file(path)
    validate(config, source=path)
    return config


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as --config.task.name=countdown


def apply_override(config: ml_collections.ConfigDict, dotted_key: str, text: str) -> None:
    """Sets `config.<dotted_key>` from the command-line text, checking the key and the type."""
    if dotted_key in RENAMED_KEYS:
        raise ConfigError(f"--config.{dotted_key} moved: use {RENAMED_KEYS[dotted_key]}")
    *parents, leaf = dotted_key.split(".")
    node = config
    for depth, name in enumerate(parents):
        if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
            raise ConfigError(f"unknown config key 'config.{'.'.join(parents[:depth + 1])}' (in --config.{dotted_key})")
        node = node[name]
    if leaf not in node and parents == ["method"]:  # a recipe's option: checked with the recipe (check_recipe_keys)
        node[leaf] = _parse_value(text)
        return
    if leaf not in node:
        known = ", ".join(sorted(node.keys()))
        raise ConfigError(f"unknown config key 'config.{dotted_key}'; keys at that level: {known}")
    old, value = node[leaf], _parse_value(text)
    if isinstance(old, bool) and not isinstance(value, bool):
        raise ConfigError(f"config.{dotted_key} must be True or False, got {text!r}")
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if old is not None and not isinstance(old, ml_collections.ConfigDict) and type(value) is not type(old):
        if isinstance(old, tuple) and isinstance(value, list):
            value = tuple(value)
        else:
            raise ConfigError(f"config.{dotted_key} must be of type {type(old).__name__}, got {text!r} ({type(value).__name__})")
    node[leaf] = value


def parse_overrides(args: Sequence[str]) -> list[tuple[str, str]]:
    """`["--config.a.b=1", "--config.c", "2"]` -> [("a.b", "1"), ("c", "2")]; raises on anything else."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise ConfigError(f"unrecognised argument {arg!r}; overrides look like --config.rl.group_size=16")
        if "=" in arg:
            key, text = arg[len("--config."):].split("=", 1)
        elif i + 1 < len(args):
            key, text = arg[len("--config."):], args[i + 1]
            i += 1
        else:
            raise ConfigError(f"{arg} has no value")
        pairs.append((key, text))
        i += 1
    return pairs


def build_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """The config of the file at `path` with the command-line `overrides` applied, validated once
    (the file as written may rely on an override to be valid)."""
    config = _run_config_file(path)
    for key, text in parse_overrides(overrides):
        apply_override(config, key, text)
    validate(config, source=path)
    return config


def _dotted_keys(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
    """Every section and field of `config` as a dotted key: {"rl", "rl.steps", ...}."""
    keys = set()
    for name, value in config.items():
        keys.add(prefix + name)
        if isinstance(value, ml_collections.ConfigDict):
            keys |= _dotted_keys(value, f"{prefix}{name}.")
    return keys


def _check_known_keys(config: ml_collections.ConfigDict, source: str | Path | None = None) -> None:
    """Raises ConfigError listing every key of `config` that is neither in configs/default.py nor in
    RECIPE_KEYS, each with the nearest valid key; `source` is the config file, named in the message."""
    known = set(key_types())
    known |= {key.rpartition(".")[0] for key in known} - {""}
    unknown = _dotted_keys(config) - known
    problems = []
    for key in sorted(unknown):
        section = key.rpartition(".")[0]
        if section in unknown:
            continue  # inside an unknown section: the section is reported
        if key in RENAMED_KEYS:
            problems.append(f"config.{key} moved: use {RENAMED_KEYS[key]}")
            continue
        if section == "method":
            continue  # the recipe's own option, or not: `check_recipe_keys` decides once the recipe is known
        match = (difflib.get_close_matches(key, [k for k in known if k.rpartition(".")[0] == section], n=1)
                 or difflib.get_close_matches(key, known, n=1))  # a typo in the field's name first, else anywhere
        hint = f"did you mean 'config.{match[0]}'?" if match else "configs/default.py lists every key with its default"
        problems.append(f"unknown config key 'config.{key}' ({hint})")
    if problems:
        where = f"config file {source}: " if source is not None else ""
        raise ConfigError(where + "; ".join(problems))


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config.{key}: {message}")


@functools.lru_cache(maxsize=1)
def _default_config() -> ml_collections.ConfigDict:
    """configs/default.py's config, read once (never changed: callers only read it)."""
    return _run_config_file(DEFAULT_CONFIG_FILE)


@functools.lru_cache(maxsize=1)
def key_types() -> dict[str, type]:
    """The type of every key a config may have: those of configs/default.py (the type of its default)
    and of RECIPE_KEYS. Float keys also take ints; tuple keys hold ints."""
    def leaves(node, prefix=""):
        for name, value in node.items():
            if isinstance(value, ml_collections.ConfigDict):
                yield from leaves(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", tuple if isinstance(value, (tuple, list)) else type(value)

    types = dict(leaves(_default_config()))
    types.update({f"{section}.{name}": kind for section, names in RECIPE_KEYS.items() for name, kind in names.items()})
    return types


def check_recipe_keys(config: ml_collections.ConfigDict, recipe: str, defaults: dict) -> None:
    """Checks `config.method` for the recipe `recipe`, whose own options and their defaults are
    `defaults` (`Recipe.config_defaults`): a key that is neither one of them nor of configs/default.py's
    `method` section is a ConfigError naming the nearest option; each option must have its default's
    type; a missing option is set to its default (so that config.json records it)."""
    common = {key.partition(".")[2] for key in key_types() if key.startswith("method.")}
    unknown = sorted(set(config.method.keys()) - common - set(defaults))
    if unknown:
        match = difflib.get_close_matches(unknown[0], [*defaults, *common], n=1)
        hint = f"did you mean 'config.method.{match[0]}'? " if match else ""
        raise ConfigError(f"config.method.{unknown[0]}: not an option of the recipe {recipe} ({hint}its options: "
                          f"{', '.join(sorted(defaults)) or 'none'}, besides those of configs/default.py)")
    for name, default in defaults.items():
        if name in config.method:
            _check_type(config, f"method.{name}", float if isinstance(default, float) else type(default))
        else:
            config.method[name] = default


def _lookup(config: ml_collections.ConfigDict, dotted_key: str):
    node = config
    for name in dotted_key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise ConfigError(f"config.{dotted_key} is missing (configs/default.py lists every key with its default)")
        node = node[name]
    return node


def _check_type(config: ml_collections.ConfigDict, dotted_key: str, expected: type) -> None:
    value = _lookup(config, dotted_key)
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is tuple:
        ok = isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = isinstance(value, expected)
    what = {tuple: "a tuple of ints", float: "a finite number"}.get(expected, f"of type {expected.__name__}")
    _require(ok, dotted_key, f"must be {what}, got {value!r} ({type(value).__name__})")


def validate(config: ml_collections.ConfigDict, source: str | Path | None = None) -> None:
    """Checks keys, types, ranges and cross-field rules once, at start-up; `source` is the config
    file the config came from, named in the message about unknown keys."""
    _check_known_keys(config, source)
    _check_type(config, "task.name", str)
    _require(config.task.name in TASKS, "task.name", f"must be one of {TASKS}, got {config.task.name!r}")
    for key in TASK_KEYS.get(config.task.name, ()):
        _lookup(config, f"task.{key}")  # a data task's own keys must be there
    present = _dotted_keys(config)
    optional = {f"{section}.{name}" for section, names in RECIPE_KEYS.items() for name in names}
    for key, expected in key_types().items():
        if key in present or key not in optional:  # every key of configs/default.py must be there
            _check_type(config, key, expected)
    chat_modes = ("auto", "on", "off")  # jaxrl_self/tasks/chat.py CHAT_TEMPLATE_MODES
    _require(config.task.chat_template in chat_modes, "task.chat_template",
             f"must be one of {chat_modes}, got {config.task.chat_template!r}")
    _validate_task(config.task)
    for key in ("seed", "task.seed"):
        _require(0 <= _lookup(config, key) <= MAX_SEED, key, f"must be in [0, {MAX_SEED}], got {_lookup(config, key)}")
    model = config.model
    for key in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "intermediate_size"):
        _require(model[key] >= 1, f"model.{key}", f"must be >= 1, got {model[key]}")
    _require(model.num_heads % model.num_kv_heads == 0, "model.num_kv_heads", f"must divide model.num_heads ({model.num_heads}), got {model.num_kv_heads}")
    _require(model.dtype in ("float32", "bfloat16"), "model.dtype", f"must be 'float32' or 'bfloat16', got {model.dtype!r}")
    _require(model.param_dtype in ("float32", "bfloat16"), "model.param_dtype",
             f"must be 'float32' or 'bfloat16', got {model.param_dtype!r}")
    _require(model.remat in REMAT_MODES, "model.remat", f"must be one of {REMAT_MODES}, got {model.remat!r}")
    _validate_lora(config)
    _require(model.attention in ATTENTION_IMPLEMENTATIONS, "model.attention",
             f"must be one of {ATTENTION_IMPLEMENTATIONS}, got {model.attention!r}")
    _require(model.rope_theta > 0, "model.rope_theta", f"must be > 0, got {model.rope_theta}")
    _require(model.logprob_chunk >= -1, "model.logprob_chunk",
             f"must be >= 0 (0 = no chunking) or -1 (auto), got {model.logprob_chunk}")
    sft, rl = config.sft, config.rl
    _require(sft.steps >= 0, "sft.steps", f"must be >= 0, got {sft.steps}")
    _require(rl.steps >= 0, "rl.steps", f"must be >= 0, got {rl.steps}")
    _require(sft.batch_size >= 1, "sft.batch_size", f"must be >= 1, got {sft.batch_size}")
    _require(rl.algorithm in RL_ALGORITHMS, "rl.algorithm", f"must be one of {RL_ALGORITHMS}, got {rl.algorithm!r}")
    _require(rl.reward in REWARD_METHODS or REWARD_FUNCTION.fullmatch(rl.reward) is not None, "rl.reward",
             f"must be one of {REWARD_METHODS} or a reward function of your own as 'module.path:function' "
             f"(docs/rewards.md), got {rl.reward!r}")
    _require(rl.prompts_per_step >= 1, "rl.prompts_per_step", f"must be >= 1, got {rl.prompts_per_step}")
    _require(rl.group_size >= 1, "rl.group_size", f"must be >= 1, got {rl.group_size}")
    if ALGORITHMS[rl.algorithm].min_group_size > 1:
        _require(rl.group_size >= ALGORITHMS[rl.algorithm].min_group_size, "rl.group_size",
                 f"group methods ({rl.algorithm}) need a group of >= 2 completions per prompt, got {rl.group_size}")
    _require(rl.max_new_tokens >= 1, "rl.max_new_tokens", f"must be >= 1, got {rl.max_new_tokens}")
    _require(rl.temperature >= 0, "rl.temperature", f"must be >= 0, got {rl.temperature}")
    _require(0 < rl.top_p <= 1, "rl.top_p", f"must be in (0, 1], got {rl.top_p}")
    _require(rl.kl_coef >= 0, "rl.kl_coef", f"must be >= 0, got {rl.kl_coef}")
    _require(0 <= rl.eps_low < 1, "rl.eps_low", f"must be in [0, 1) (the ratio is clipped at 1 - eps_low), got {rl.eps_low}")
    _require(rl.eps_high >= 0, "rl.eps_high", f"must be >= 0, got {rl.eps_high}")
    _require(rl.std_ddof in (0, 1), "rl.std_ddof", f"must be 0 (population std) or 1 (unbiased std), got {rl.std_ddof}")
    _require(rl.advantage_eps > 0, "rl.advantage_eps", f"must be > 0, got {rl.advantage_eps}")
    _require(rl.entropy_coef >= 0, "rl.entropy_coef", f"must be >= 0 (0 = no entropy bonus), got {rl.entropy_coef}")
    aggregations = ("", *AGGREGATION_MODES)
    _require(rl.loss_aggregation in aggregations, "rl.loss_aggregation",
             f"must be one of {aggregations} ('' = the algorithm's default), got {rl.loss_aggregation!r}")
    _require(rl.lr_schedule in ("cosine", "constant"), "rl.lr_schedule", f"must be 'cosine' or 'constant', got {rl.lr_schedule!r}")
    _require(rl.moments_dtype in ("float32", "bfloat16"), "rl.moments_dtype", f"must be 'float32' or 'bfloat16', got {rl.moments_dtype!r}")
    for key in ("learning_rate",):
        _require(sft[key] > 0, f"sft.{key}", f"must be > 0, got {sft[key]}")
        _require(rl[key] > 0, f"rl.{key}", f"must be > 0, got {rl[key]}")
    _require(rl.max_grad_norm > 0, "rl.max_grad_norm", f"must be > 0, got {rl.max_grad_norm}")
    _require(rl.weight_decay >= 0, "rl.weight_decay", f"must be >= 0, got {rl.weight_decay}")
    _require(rl.ref_refresh_every >= 0, "rl.ref_refresh_every", f"must be >= 0 (0 = never), got {rl.ref_refresh_every}")
    ppo = rl.ppo
    _require(0 <= ppo.gamma <= 1, "rl.ppo.gamma", f"must be in [0, 1], got {ppo.gamma}")
    _require(0 <= ppo.gae_lambda <= 1, "rl.ppo.gae_lambda", f"must be in [0, 1], got {ppo.gae_lambda}")
    _require(ppo.value_coef >= 0, "rl.ppo.value_coef", f"must be >= 0, got {ppo.value_coef}")
    _require(ppo.value_clip_eps > 0, "rl.ppo.value_clip_eps", f"must be > 0, got {ppo.value_clip_eps}")
    nft, nsr = rl.nft, rl.nsr
    _require(nft.weighting in NFT_WEIGHTINGS, "rl.nft.weighting", f"must be one of {NFT_WEIGHTINGS}, got {nft.weighting!r}")
    _require(nft.neg_weight >= 0, "rl.nft.neg_weight", f"must be >= 0, got {nft.neg_weight}")
    _require(0 < nft.neg_floor <= 1, "rl.nft.neg_floor", f"must be in (0, 1] (above 1 it acts at ratio 1), got {nft.neg_floor}")
    _require(0 <= nft.mean_clamp < 0.5, "rl.nft.mean_clamp", f"must be in [0, 0.5), got {nft.mean_clamp}")
    _require(nsr.pos_weight >= 0, "rl.nsr.pos_weight", f"must be >= 0 (0 = negatives only), got {nsr.pos_weight}")
    _require(nsr.neg_weight >= 0, "rl.nsr.neg_weight", f"must be >= 0 (0 = rejection-sampling fine-tuning), got {nsr.neg_weight}")
    _require(nsr.pos_weight > 0 or nsr.neg_weight > 0, "rl.nsr.neg_weight", "rl.nsr.pos_weight and rl.nsr.neg_weight are both 0: no loss")
    if rl.overlong_max_len > 0:
        _require(0 < rl.overlong_cache_len <= rl.overlong_max_len, "rl.overlong_cache_len",
                 f"must be in (0, rl.overlong_max_len={rl.overlong_max_len}] when overlong shaping is on, got {rl.overlong_cache_len}")
    if rl.filter_zero_advantage_groups:
        _require(rl.group_size >= 2, "rl.group_size", f"rl.filter_zero_advantage_groups needs a group of >= 2, got {rl.group_size}")
    if rl.algorithm == "reinforce_pp" and rl.reinforce_pp.group_baseline:
        _require(rl.group_size >= 2, "rl.group_size",
                 f"reinforce_pp with rl.reinforce_pp.group_baseline needs a group of >= 2, got {rl.group_size}")
    for key in ("rl.epochs", "rl.minibatches", "rl.micro_batches", "model.max_position_embeddings", "task.test_size",
                "log_every", "eval.num_examples", "eval.batch_size", "eval.every", "checkpoint.every",
                "checkpoint.max_to_keep", "faults.max_consecutive_nonfinite", "task.max_prompt_len", "task.max_reference_len",
                "rl.sampler_windows"):
        _require(_lookup(config, key) >= 1, key, f"must be >= 1, got {_lookup(config, key)}")
    for key in ("sft.warmup_steps", "rl.warmup_steps", "rl.top_k", "rl.dapo.max_resample_rounds", "rl.overlong_max_len",
                "rl.overlong_cache_len", "rl.sampler_slots"):
        _require(_lookup(config, key) >= 0, key, f"must be >= 0, got {_lookup(config, key)}")
    _validate_curriculum(config)
    _validate_self_verify(config)
    _validate_rise(config)
    rows = rl.prompts_per_step * rl.group_size
    _require(rows % (rl.minibatches * rl.micro_batches) == 0, "rl.micro_batches",
             f"prompts_per_step*group_size ({rows}) must be divisible by minibatches*micro_batches ({rl.minibatches}*{rl.micro_batches})")
    total_len = config.task.max_prompt_len + rl.max_new_tokens
    _require(total_len <= model.max_position_embeddings, "rl.max_new_tokens",
             f"task.max_prompt_len + rl.max_new_tokens = {total_len} exceeds the model's context model.max_position_embeddings = {model.max_position_embeddings}")
    _validate_mesh(config)


def _validate_task(task: ml_collections.ConfigDict) -> None:
    """The options of the task `task.name` names: each within what the task can generate or read; no
    other task's option set to other than its default (it would be silently ignored)."""
    defaults = _default_config().task
    for name in sorted(set(task.keys()) & {option for options in TASK_OPTIONS.values() for option in options}):
        if name not in TASK_OPTIONS[task.name] and (name not in defaults or task[name] != defaults[name]):
            readers = [other for other, options in TASK_OPTIONS.items() if name in options]
            _require(False, f"task.{name}", f"task {task.name!r} does not read it (an option of {', '.join(readers)}); "
                     "remove it, or set task.name")
    if task.name in ("arithmetic", "arithmetic_mixed", "word_arithmetic"):
        module = word_arithmetic if task.name == "word_arithmetic" else arithmetic
        digits = word_arithmetic.DIGITS if task.name == "word_arithmetic" else range(1, arithmetic.MAX_DIGITS + 1)
        _require(task.digits in digits, "task.digits", f"must be in [{digits[0]}, {digits[-1]}], got {task.digits}")
        _require(task.ops and not set(task.ops) - set(module.OPS), "task.ops",
                 f"must be a non-empty string of the operations {module.OPS!r}, got {task.ops!r}")
    if task.name in ("arithmetic", "arithmetic_mixed"):
        for key in ("demo_error_rate", "check_error_rate"):
            _require(0.0 <= task[key] <= 1.0, f"task.{key}", f"must be in [0, 1], got {task[key]}")
    if task.name == "word_arithmetic":
        formats = tuple(word_arithmetic.INSTRUCTIONS)
        _require(task.answer_format in formats, "task.answer_format", f"must be one of {formats}, got {task.answer_format!r}")
    if task.name == "countdown":
        for key in ("num_numbers", "max_number", "max_target"):
            _require(task[key] >= 1, f"task.{key}", f"must be >= 1, got {task[key]}")
    if task.name in ("jsonl", "tfds"):
        _require(task.answer_format in ANSWER_FORMATS, "task.answer_format",
                 f"must be one of {ANSWER_FORMATS}, got {task.answer_format!r}")
        _require(PROMPT_PLACEHOLDER in task.template, "task.template", f"must contain {PROMPT_PLACEHOLDER}, got {task.template!r}")


def _validate_curriculum(config: ml_collections.ConfigDict) -> None:
    """config.curriculum (docs/curricula.md): a known curriculum with SEC's step size in (0, 1] and a
    positive temperature, a hint fraction in (0, 1), and both read by the RL recipe only."""
    curriculum, rl = config.curriculum, config.rl
    _require(curriculum.name in CURRICULA, "curriculum.name", f"must be one of {CURRICULA}, got {curriculum.name!r}")
    _require(0 < curriculum.step_size <= 1, "curriculum.step_size", f"must be in (0, 1], got {curriculum.step_size}")
    _require(curriculum.temperature > 0, "curriculum.temperature", f"must be > 0, got {curriculum.temperature}")
    _require(0 < curriculum.hint_fraction < 1, "curriculum.hint_fraction", f"must be in (0, 1), got {curriculum.hint_fraction}")
    if curriculum.name != "uniform" or curriculum.hint_all_fail:
        what = f"curriculum.name = {curriculum.name!r}" if curriculum.name != "uniform" else "curriculum.hint_all_fail"
        _require(not config.method.get("loop"), "method.loop", f"{what} is for the RL recipe (method.loop = ''), "
                 f"got {config.method.loop!r}")
        _require(rl.group_size >= 2, "rl.group_size", f"{what} needs a group of >= 2 completions per prompt, got {rl.group_size}")
    if curriculum.hint_all_fail:
        _require(rl.reward == "verifier", "rl.reward", f"curriculum.hint_all_fail needs the verifier's reward (hints are "
                 f"the task's worked solutions, a label), got {rl.reward!r}")
        total = config.task.max_prompt_len + math.ceil(curriculum.hint_fraction * rl.max_new_tokens) + rl.max_new_tokens
        _require(total <= config.model.max_position_embeddings, "curriculum.hint_fraction",
                 f"task.max_prompt_len + the longest hint (hint_fraction * rl.max_new_tokens, rounded up) + "
                 f"rl.max_new_tokens = {total} exceeds model.max_position_embeddings = {config.model.max_position_embeddings}")


def _validate_self_verify(config: ml_collections.ConfigDict) -> None:
    """config.rl.self_verify (LaSeR): non-negative weights and warm-ups, a positive beta, and, when on,
    the RL recipe with the verifier's reward (the labels) and an outcome-advantage algorithm."""
    sv, rl = config.rl.self_verify, config.rl
    for key in ("coef", "warmup_steps", "advantage_warmup_steps", "min_std"):
        _require(sv[key] >= 0, f"rl.self_verify.{key}", f"must be >= 0, got {sv[key]}")
    _require(sv.beta > 0, "rl.self_verify.beta", f"must be > 0, got {sv.beta}")
    _require(0 <= sv.advantage_coef <= 1, "rl.self_verify.advantage_coef", f"must be in [0, 1], got {sv.advantage_coef}")
    _require(bool(sv.token.strip()), "rl.self_verify.token", "must be a non-empty token string")
    if sv.advantage_coef > 0:
        _require(sv.coef > 0, "rl.self_verify.advantage_coef", "blends the self-reward, which needs rl.self_verify.coef > 0")
    if sv.coef > 0:
        _require(not config.method.get("loop"), "method.loop", f"rl.self_verify is for the RL recipe (method.loop = ''), "
                 f"got {config.method.loop!r}")
        _require(rl.reward == "verifier", "rl.reward", f"rl.self_verify learns the verifier's labels: needs rl.reward = "
                 f"'verifier', got {rl.reward!r}")
        _require(not algorithm_of(rl).token_advantages, "rl.algorithm",
                 f"rl.self_verify needs an algorithm with one advantage per completion, got {rl.algorithm!r}")


def _validate_rise(config: ml_collections.ConfigDict) -> None:
    """config.rl.rise (RISE): when on, the RL recipe with the verifier's reward (the labels), an
    outcome-advantage algorithm without a value head, no LaSeR in the same run, no more solutions
    to verify than a step samples, and two different verdicts (the lengths, which need the
    tokenizer, are checked when the recipe is set up)."""
    rl = config.rl
    _require(rl.rise.prompts >= 0, "rl.rise.prompts", f"must be >= 0 (0 = off), got {rl.rise.prompts}")
    if rl.rise.prompts == 0:
        return
    _require(not config.method.get("loop"), "method.loop", f"rl.rise is for the RL recipe (method.loop = ''), got {config.method.loop!r}")
    _require(rl.reward == "verifier", "rl.reward", f"rl.rise verifies against the verifier's labels: needs rl.reward = "
             f"'verifier', got {rl.reward!r}")
    algorithm = algorithm_of(rl)
    _require(not algorithm.token_advantages and not algorithm.value_head, "rl.algorithm",
             f"rl.rise needs an algorithm with one advantage per completion, got {rl.algorithm!r}")
    _require(rl.group_size >= 2, "rl.group_size", f"rl.rise forms groups of verdicts: needs rl.group_size >= 2, got {rl.group_size}")
    _require(rl.self_verify.coef == 0, "rl.self_verify.coef", "rl.rise and rl.self_verify (LaSeR) are two ways to "
             "self-verify; turn one off")
    _require(rl.rise.prompts <= rl.prompts_per_step * rl.group_size, "rl.rise.prompts",
             f"verifies the step's own solutions: at most prompts_per_step*group_size = {rl.prompts_per_step * rl.group_size}, "
             f"got {rl.rise.prompts}")
    rows = (rl.prompts_per_step + rl.rise.prompts) * rl.group_size
    _require(rows % (rl.minibatches * rl.micro_batches) == 0, "rl.rise.prompts",
             f"(prompts_per_step + rise.prompts)*group_size ({rows}) must be divisible by minibatches*micro_batches "
             f"({rl.minibatches}*{rl.micro_batches})")
    for key in ("marker", "yes", "no"):
        _require(bool(rl.rise[key].strip()), f"rl.rise.{key}", "must be a non-empty string")
    _require(rl.rise.yes != rl.rise.no, "rl.rise.no", f"must differ from rl.rise.yes, got {rl.rise.no!r} for both")


def _validate_mesh(config: ml_collections.ConfigDict) -> None:
    """config.mesh / config.distributed: types, sizes (-1 fills the rest, at most once) and, when the
    mesh's device count is fixed, that its sizes multiply to it (the device count itself is checked
    by `parallel.make_mesh` at start-up)."""
    for key in ("mesh.num_devices", "mesh.data", "mesh.fsdp", "mesh.tensor", "distributed.num_processes",
                "distributed.process_id"):
        _check_type(config, key, int)
    _check_type(config, "distributed.coordinator_address", str)
    _check_type(config, "distributed.auto", bool)
    mesh = config.mesh
    sizes = {name: mesh[name] for name in ("data", "fsdp", "tensor")}
    for name, size in sizes.items():
        _require(size == -1 or size >= 1, f"mesh.{name}", f"must be >= 1 or -1 (the remaining devices), got {size}")
    _require(list(sizes.values()).count(-1) <= 1, "mesh", f"at most one of data/fsdp/tensor may be -1, got {sizes}")
    _require(mesh.num_devices >= 0, "mesh.num_devices", f"must be >= 0 (0 = all devices), got {mesh.num_devices}")
    fixed = 1
    for size in sizes.values():
        fixed *= size if size != -1 else 1
    if mesh.num_devices and -1 in sizes.values():
        _require(mesh.num_devices % fixed == 0, "mesh", f"the fixed sizes in {sizes} must divide mesh.num_devices = {mesh.num_devices}")
    elif mesh.num_devices:
        _require(fixed == mesh.num_devices, "mesh", f"data*fsdp*tensor = {fixed} must equal mesh.num_devices = "
                 f"{mesh.num_devices} (or set one of them to -1)")
    dist = config.distributed
    if dist.coordinator_address:
        _require(dist.num_processes >= 1, "distributed.num_processes", f"must be >= 1, got {dist.num_processes}")
        _require(0 <= dist.process_id < dist.num_processes, "distributed.process_id",
                 f"must be in [0, distributed.num_processes={dist.num_processes}), got {dist.process_id}")
    if dist.coordinator_address or dist.auto:
        _require(mesh.num_devices == 0, "mesh.num_devices", "must be 0 (all devices) in a multi-process run")


def _validate_lora(config: ml_collections.ConfigDict) -> None:
    """`config.model.lora` (docs/lora.md): rank >= 0 (0 = off), alpha > 0, known targets, dropout in [0, 1),
    base_quantization off or a known format with LoRA on and input axes in whole blocks."""
    lora = config.model.lora
    _require(lora.rank >= 0, "model.lora.rank", f"must be >= 0 (0 = no adapters), got {lora.rank}")
    _require(lora.alpha > 0, "model.lora.alpha", f"must be > 0, got {lora.alpha}")
    try:
        parse_lora_targets(lora.targets)
    except ValueError as error:
        raise ConfigError(f"config.model.lora.targets: {error} in {lora.targets!r}; choose 'all' or some of "
                          f"{','.join(LORA_TARGETS)}") from None
    _require(0 <= lora.dropout < 1, "model.lora.dropout", f"must be in [0, 1) (the probability of zeroing an "
             f"adapter input in the learner's forwards), got {lora.dropout}")
    quantization = lora.get("base_quantization", "")
    _require(quantization in ("",) + QUANTIZATION_FORMATS, "model.lora.base_quantization",
             f"must be '' (off) or one of {QUANTIZATION_FORMATS}, got {quantization!r}")
    _require(not quantization or lora.rank > 0, "model.lora.base_quantization",
             f"{quantization!r} quantizes a frozen base: it needs LoRA (model.lora.rank > 0)")
    if quantization and not config.model.init_from:  # a pretrained model's sizes: check_quantization_blocks at load
        model = config.model
        check_quantization_blocks(model.hidden_size, model.head_dim, model.intermediate_size, "the model")


def check_quantization_blocks(hidden_size: int, head_dim: int, intermediate_size: int, model: str) -> None:
    """ConfigError naming `model.lora.base_quantization` when a projection's input axis (`model`'s
    size) cannot be cut into blocks of 32 values."""
    misaligned = misaligned_inputs(hidden_size, head_dim, intermediate_size)
    _require(not misaligned, "model.lora.base_quantization",
             f"quantizes each projection in blocks of {QUANTIZATION_BLOCK} values along its input axis, but in "
             f"{model} the input axis of {', '.join(misaligned)} is not a multiple of {QUANTIZATION_BLOCK}")


def validate_devices(config: ml_collections.ConfigDict, device_count: int, process_count: int) -> None:
    """Checks `config.mesh` against the `device_count` devices there are, and that every batch splits
    evenly over the data-parallel axes (`data` x `fsdp`) and over the `process_count` processes,
    each of which reads its own share of the prompts. Needs JAX's device and process counts, so it
    runs at the start of training rather than in `validate`."""
    from jaxrl_self.parallel.mesh import mesh_shape

    mesh = config.mesh
    devices = mesh.num_devices or device_count
    _require(devices <= device_count, "mesh.num_devices", f"asks for {devices} devices, but there are {device_count}")
    try:
        data, fsdp, _ = mesh_shape(mesh.data, mesh.fsdp, mesh.tensor, devices)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    shards = data * fsdp
    where = f"the data-parallel size {shards} (config.mesh: data={data} x fsdp={fsdp} on {devices} devices)"
    rows = config.rl.prompts_per_step * config.rl.group_size
    _require(rows % shards == 0, "rl.prompts_per_step", f"prompts_per_step*group_size ({rows}) must be divisible by {where}")
    _require(config.sft.batch_size % shards == 0, "sft.batch_size", f"must be divisible by {where}, got {config.sft.batch_size}")
    if config.rl.rise.prompts:  # the solutions to verify are split over the same axes
        _require(config.rl.rise.prompts % shards == 0, "rl.rise.prompts", f"must be divisible by {where}, got {config.rl.rise.prompts}")
    if process_count > 1:  # each process owns whole batch rows: its prompts and their G completions
        _require(shards % process_count == 0, "mesh", f"{where} must be a multiple of the {process_count} processes "
                 "(the tensor axis must not span processes)")
        _require(config.rl.prompts_per_step % shards == 0, "rl.prompts_per_step",
                 f"must be divisible by {where} with {process_count} processes, got {config.rl.prompts_per_step}")


def config_to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def with_new_defaults(recorded: dict) -> dict:
    """A run's recorded config (its config.json as a dict) with every key of configs/default.py it
    lacks set to that key's default: a run recorded before a key existed resumes, extends and
    evaluates as if the key had its default value (what the run did). Recorded values win."""
    def merge(base: dict, values: dict) -> dict:
        for key, value in values.items():
            base[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return base

    return merge(json.loads(config_to_json(_default_config())), recorded)
