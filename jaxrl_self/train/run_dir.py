"""A run directory as a starting model: `config.model.init_from` naming another run's checkpoint.

  init_from = "runs/x"                  the newest checkpoint of the run in runs/x (runs/x/checkpoints)
  init_from = "runs/x/best_checkpoint"  its checkpoint with the best held-out accuracy

`load_model` reads these as well as the files `models.pretrained.load_pretrained` reads (.gguf,
HF or orbax model directory), and returns what it returns: `(ModelConfig, graphdef, params,
tokenizer)`. A run's model is the one its own config.json describes: for a run from scratch, the
architecture of its `config.model` with the tokenizer its task builds; for a run from a pretrained
model (its own `model.init_from`, read again here), that model's architecture and tokenizer. Only
the checkpoint's `params` are read (never its optimizer state), and nothing in the run directory
is written or moved. The embedding keeps the checkpoint's rows: special tokens a recipe of the
run added after the vocabulary (`RunContext`'s `extend_tokenizer`) keep their trained rows, and
the new run's recipe, adding its own, gives them the same ids when it adds the same tokens.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxrl_self.config import ConfigError, with_new_defaults
from jaxrl_self.models.checkpoint_io import ShardingFor, relayout_params
from jaxrl_self.models.config import ModelConfig, model_config_from
from jaxrl_self.models.convert import abstract_params
from jaxrl_self.models.hf_config import CheckpointError
from jaxrl_self.models.pretrained import load_pretrained
from jaxrl_self.models.transformer import model_graphdef
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.train.workdir import BEST_CHECKPOINT_DIR, CHECKPOINT_DIR, CONFIG_FILE


def find_run(path) -> Optional[tuple[Path, Path]]:
    """(run directory, checkpoint directory) when `path` is a run directory (its config.json and
    checkpoints/: the newest checkpoint) or its best_checkpoint/ or checkpoints/; else None."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() and (path / CHECKPOINT_DIR).is_dir():
        return path, path / CHECKPOINT_DIR
    if path.name in (CHECKPOINT_DIR, BEST_CHECKPOINT_DIR) and path.is_dir() and (path.parent / CONFIG_FILE).is_file():
        return path.parent, path
    return None


def read_run_config(run_dir) -> ml_collections.ConfigDict:
    """The resolved config a run recorded in its config.json."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return ml_collections.ConfigDict(with_new_defaults(json.loads(path.read_text())))
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the run config {path}: {error}") from error


def load_model(path: str, dtype: str = "float32", sharding_for: Optional[ShardingFor] = None, scan_layers: bool = False):
    """(config, graphdef, params, tokenizer) of a run's checkpoint (`find_run`) or of a pretrained
    model (`load_pretrained`, same arguments)."""
    found = find_run(path)
    if found is None:
        return load_pretrained(path, dtype, sharding_for=sharding_for, scan_layers=scan_layers)
    run_dir, checkpoint_dir = found
    run_config = read_run_config(run_dir)
    if run_config.model.lora.rank:
        raise ConfigError(f"{path} is a LoRA run (model.lora.rank = {run_config.model.lora.rank}): its checkpoints hold "
                          f"the adapters only; write the merged model with `jaxrl-self export {run_dir} OUT_DIR` and start "
                          "from OUT_DIR (docs/lora.md#export)")
    model_config, tokenizer = run_model(run_config)
    stored = dataclasses.replace(model_config, vocab_size=_embedding_rows(checkpoint_dir), dtype=dtype)
    if stored.scan_layers == scan_layers:
        params = restore_params(checkpoint_dir, stored, sharding_for)
    else:  # restored into host memory, then placed again in the asked layout one parameter at a time
        host = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
        stored, _, params = relayout_params(stored, restore_params(checkpoint_dir, stored, lambda axes, shape: host),
                                            scan_layers, sharding_for)
    return stored, model_graphdef(stored), params, tokenizer


def run_model(run_config) -> tuple[ModelConfig, object]:
    """(ModelConfig, tokenizer) of the model a run trains, before a recipe adds tokens; the config's
    `scan_layers` is the layout of the run's checkpoints."""
    pretrained = run_config.model.get("init_from")
    if pretrained:
        # the architecture and tokenizer of the run's starting model (its weights are read, then dropped)
        host = jax.sharding.SingleDeviceSharding(jax.local_devices(backend="cpu")[0])
        model_config, _, _, tokenizer = load_model(pretrained, run_config.model.dtype, sharding_for=lambda a, s: host,
                                                   scan_layers=run_config.model.scan_layers)
        return model_config, tokenizer
    tokenizer = build_task(run_config.task).tokenizer
    return model_config_from(run_config, tokenizer.vocab_size), tokenizer


def _latest_step(checkpoint_dir: Path) -> int:
    steps = sorted(int(p.name) for p in Path(checkpoint_dir).iterdir() if p.name.isdigit() and p.is_dir())
    if not steps:
        raise CheckpointError(f"no checkpoint in {checkpoint_dir}")
    return steps[-1]


def _reader(checkpoint_dir: Path) -> ocp.CheckpointManager:
    """A manager that only reads `checkpoint_dir` (creates, cleans up and prunes nothing)."""
    options = ocp.CheckpointManagerOptions(create=False, cleanup_tmp_directories=False, max_to_keep=None)
    return ocp.CheckpointManager(Path(checkpoint_dir).absolute(), options=options,
                                 item_handlers={"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()})


def _embedding_rows(checkpoint_dir: Path) -> int:
    """The vocabulary size of the newest checkpoint's params (rows of its embedding)."""
    with _reader(checkpoint_dir) as manager:
        stored = manager.item_metadata(_latest_step(checkpoint_dir))["state"]
    return int(stored["params"]["embed_tokens"]["value"].shape[0])


def restore_params(checkpoint_dir, config: ModelConfig, sharding_for: Optional[ShardingFor] = None):
    """The `params` of the newest checkpoint in `checkpoint_dir` (a train state's policy; its
    optimizer state and reference are not read) as float32 `nnx.State` of the model `config`
    describes, placed by `sharding_for` (default: the first device)."""
    _, target = abstract_params(config, sharding_for)
    step = _latest_step(checkpoint_dir)
    with _reader(checkpoint_dir) as manager:
        restore = ocp.args.PyTreeRestore(item={"params": target}, partial_restore=True,
                                         restore_args={"params": ocp.checkpoint_utils.construct_restore_args(target)})
        try:
            restored = manager.restore(step, args=ocp.args.Composite(state=restore))
        except (ValueError, KeyError) as error:
            raise CheckpointError(f"the checkpoint at step {step} in {checkpoint_dir} does not hold the params of the "
                                  f"model its run's config.json describes: {str(error).splitlines()[0][:300]}") from error
    return restored["state"]["params"]
