"""`jaxrl-self export`: a run's checkpoint as a Hugging Face model directory.

The directory holds config.json, model.safetensors (`models.checkpoint_io.export_hf_checkpoint`)
and the run's tokenizer (`models.convert.write_tokenizer`: a pretrained model's, or the task's
character tokenizer, with any special tokens the recipe added), so that
`transformers.AutoModelForCausalLM.from_pretrained(out_dir)` and `AutoTokenizer` load it. A LoRA
run's model is written merged, or with `peft=True` as its adapters alone in the PEFT layout
(`models.checkpoint_io.export_peft_adapter`, docs/lora.md#export).
"""
from __future__ import annotations

import os
from pathlib import Path

from jaxrl_self.models.checkpoint_io import export_hf_checkpoint, export_peft_adapter
from jaxrl_self.models.convert import require_empty, special_token_ids, write_tokenizer
from jaxrl_self.recipes.runs import load_run


def export_run(workdir, out_dir, checkpoint: str = "latest", dtype: str = "float32", peft: bool = False) -> list[str]:
    """Writes the run's latest (or best) checkpoint into `out_dir` (absent or empty) as an HF model
    directory with `dtype` tensors; returns the names of the files written. Raises ConfigError for
    a directory that is not a run or has no checkpoint, CheckpointError for a non-empty `out_dir`."""
    require_empty(str(out_dir))
    run, params = load_run(Path(workdir), checkpoint)
    if peft:
        return export_peft_adapter(run.model_config, params, str(out_dir), base_model=run.config.model.init_from)
    files = export_hf_checkpoint(run.model_config, params, str(out_dir), dtype=dtype,
                                 extra_config=special_token_ids(run.tokenizer))
    return files + write_tokenizer(run.tokenizer, os.fspath(out_dir))
