"""Evaluate or sample from a finished (or running) run directory's latest or best checkpoint.

Both see the prompts as training saw them: the run's config (its `config.json`) rebuilds the task,
whose held-out prompts are already rendered (`task.template`, then the chat template as
`task.chat_template` says: `tasks.chat`), and `sample_run` renders its raw prompts the same way.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import ml_collections

from jaxrl_self.checkpoint import Checkpointer
from jaxrl_self.config import ConfigError, with_new_defaults
from jaxrl_self.eval.evaluate import evaluate, generate
from jaxrl_self.methods import run_scorer
from jaxrl_self.recipes import build_recipe
from jaxrl_self.recipes.rlvr import evaluate_self_verification, self_scorer
from jaxrl_self.tasks.chat import prompt_renderer
from jaxrl_self.tasks.encoding import prompt_length
from jaxrl_self.train.context import RunContext
from jaxrl_self.train.loop import fresh_state
from jaxrl_self.train.state import CHECKPOINTED_PART
from jaxrl_self.train.workdir import BEST_CHECKPOINT_DIR, CHECKPOINT_DIR, CONFIG_FILE

CHECKPOINTS = {"latest": CHECKPOINT_DIR, "best": BEST_CHECKPOINT_DIR}  # which -> subdirectory of the run


def load_run(workdir: Path, which: str = "latest"):
    """(RunContext, params) of `workdir`'s newest checkpoint ("latest") or of its best held-out accuracy ("best")."""
    if which not in CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {sorted(CHECKPOINTS)}, got {which!r}")
    config_path = Path(workdir) / CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(f"{workdir} is not a run directory: {config_path} is missing")
    recorded = json.loads(config_path.read_text())
    if "chat_template" not in recorded["task"]:  # a run from before task.chat_template: trained on raw prompts
        recorded["task"]["chat_template"] = "off"
    config = ml_collections.ConfigDict(with_new_defaults(recorded))  # keys added since the run: their defaults
    recipe = build_recipe(config)
    run = RunContext(config, scratch_tokenizer=recipe.scratch_tokenizer(config), extend_tokenizer=recipe.extend_tokenizer)
    recipe.setup(run)
    directory = Path(workdir) / CHECKPOINTS[which]
    ckpt = Checkpointer(directory, read_only=True, part=CHECKPOINTED_PART)  # eval and sample never move a checkpoint
    restored = ckpt.restore_latest(lambda meta: fresh_state(run, recipe, meta["phase"]))
    ckpt.close()
    if restored is None:
        raise ConfigError(f"no restorable checkpoint in {directory}")
    return run, restored[1].params


def _check_lengths(run, num_samples: int, max_new_tokens) -> int:
    """The completion length to sample (`rl.max_new_tokens` when None), checked with `num_samples`."""
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    max_new_tokens = run.new_tokens if max_new_tokens is None else max_new_tokens
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    context = run.model_config.max_position_embeddings
    if run.prompt_len + max_new_tokens > context:
        raise ConfigError(f"--max-new-tokens {max_new_tokens} + the run's task.max_prompt_len {run.prompt_len} exceeds the "
                          f"model's context of {context} tokens (at most {context - run.prompt_len})")
    return max_new_tokens


def evaluate_run(workdir, num_samples: int = 1, ks=(1,), temperature=None, checkpoint: str = "latest",
                 max_new_tokens=None) -> dict:
    """Accuracy and pass@k / maj@k / mean@k on the run's held-out split (greedy when num_samples == 1),
    completions of up to `max_new_tokens` (default: the run's `rl.max_new_tokens`); for a run with
    LaSeR (`rl.self_verify`) or RISE (`rl.rise`) and several samples, "self_verify": `evaluate_self_verification` of
    the same number of samples (a second draw)."""
    bad_ks = [k for k in ks if not 1 <= k <= num_samples]
    if bad_ks:
        raise ConfigError(f"--k values must be in [1, --num-samples={num_samples}], got {bad_ks}")
    run, params = load_run(workdir, checkpoint)
    max_new_tokens = _check_lengths(run, num_samples, max_new_tokens)
    if temperature is None:
        temperature = 0.0 if num_samples == 1 else 1.0
    sampler = run.sampler(num_samples, temperature, max_new_tokens)
    results = evaluate(sampler, params, run.task, run.test_examples, run.prompt_len, run.config.eval.batch_size, ks=ks,
                       score=run_scorer(run.config, run.task))
    results.update(temperature=temperature, num_samples=num_samples, checkpoint=checkpoint, max_new_tokens=max_new_tokens)
    if self_scorer(run) is not None and num_samples > 1:  # a LaSeR or RISE run: how well it verifies its own samples
        results["self_verify"] = evaluate_self_verification(run, params, num_samples, temperature, max_new_tokens)
    return results


def render_prompts(run, prompts, raw: bool = False) -> list[str]:
    """`prompts` as the run's training rendered its task's questions: the task's renderer (a data
    task: `task.template`, then the chat template), else the chat template alone when the tokenizer
    has one and `task.chat_template` is not "off" (procedural tasks with a character tokenizer: as
    given). `raw`: as given. Raises ConfigError for an empty prompt, one the run's tokenizer cannot
    encode, or one longer than the run's `task.max_prompt_len` once rendered."""
    if raw:
        rendered = list(prompts)
    else:
        render = getattr(run.task, "render_prompt", None)
        if render is None:
            tokenizer = run.task.tokenizer if run.task is not None else run.tokenizer
            try:
                render = prompt_renderer(tokenizer, run.config.task.get("chat_template", "off"))
            except ValueError as error:
                raise ConfigError(str(error)) from None
        rendered = [render(p) for p in prompts]
    for number, (prompt, text) in enumerate(zip(prompts, rendered), start=1):
        if not prompt.strip():
            raise ConfigError(f"--prompt {number} is empty")
        try:
            length = prompt_length(run.tokenizer, text)
        except ValueError as error:  # a character tokenizer's alphabet
            raise ConfigError(f"--prompt {number} cannot be tokenized: {error}") from None
        if length > run.prompt_len:
            raise ConfigError(f"--prompt {number} is {length} tokens once rendered, more than the run's "
                              f"task.max_prompt_len = {run.prompt_len}")
    return rendered


def sample_run(workdir, prompts, num_samples: int = 1, temperature: float = 0.0, seed: int = 0,
               checkpoint: str = "latest", max_new_tokens=None, raw: bool = False) -> list[list[str]]:
    """`num_samples` completions (text) of each prompt: `[len(prompts)][num_samples]`, of up to
    `max_new_tokens` (default: the run's `rl.max_new_tokens`). Prompts are rendered as training
    rendered its task's questions (`render_prompts`) unless `raw`."""
    if temperature < 0:
        raise ConfigError(f"--temperature must be >= 0, got {temperature}")
    if not prompts:
        raise ConfigError("no --prompt given")
    run, params = load_run(workdir, checkpoint)
    max_new_tokens = _check_lengths(run, num_samples, max_new_tokens)
    rendered = render_prompts(run, prompts, raw)
    sampler = run.sampler(num_samples, temperature, max_new_tokens)
    return generate(sampler, params, run.tokenizer, rendered, run.prompt_len, jax.random.key(seed), len(rendered))
