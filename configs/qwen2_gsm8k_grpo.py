"""GRPO on GSM8K from a local Qwen2.5-0.5B-Instruct checkpoint (an HF directory: config.json,
*.safetensors, tokenizer.json, tokenizer_config.json). Nothing is downloaded: point
`model.init_from` and the task files at local paths, e.g.

  jaxrl-self train --config configs/qwen2_gsm8k_grpo.py \
    --config.model.init_from=/models/Qwen2.5-0.5B-Instruct \
    --config.task.train_file=/data/gsm8k_train.jsonl --config.task.test_file=/data/gsm8k_test.jsonl

The model architecture comes from the checkpoint's config.json (jaxrl_self.models.hf_config);
the `model.*` sizes inherited from the default config are not used when `init_from` is set.
This is a GPU/TPU-sized run; on a 2-core CPU expect minutes per step.
"""
import pathlib

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()

    config.model.init_from = "/path/to/Qwen2.5-0.5B-Instruct"  # local HF checkpoint directory
    config.model.dtype = "bfloat16"  # compute dtype; parameters stay float32
    config.model.max_position_embeddings = 32768  # Qwen2.5's context (the checkpoint's value is authoritative)

    config.task.name = "jsonl"
    config.task.train_file = "/path/to/gsm8k_train.jsonl"  # {"question": ..., "answer": "... #### 42"} per line
    config.task.test_file = "/path/to/gsm8k_test.jsonl"
    config.task.prompt_field = "question"
    config.task.answer_field = "answer"
    config.task.answer_format = "gsm8k"
    # the user message; "auto" renders it with the checkpoint's chat template (system prompt, <|im_start|>
    # turns, the assistant's generation prompt) in training, eval and sample (docs/chat_templates.md)
    config.task.template = "{prompt}\nPlease reason step by step, and put your final answer within \\boxed{}."
    config.task.chat_template = "auto"
    config.task.max_prompt_len = 320  # the rendered prompt: question + instruction + ~30 tokens of chat markup
    config.task.max_reference_len = 32
    config.task.test_size = 500

    config.sft.steps = 0  # start RL directly from the instruct model

    config.rl.algorithm = "grpo"
    config.rl.steps = 200
    config.rl.prompts_per_step = 32
    config.rl.group_size = 8
    config.rl.max_new_tokens = 512
    config.rl.temperature = 1.0
    config.rl.learning_rate = 1e-6
    config.rl.warmup_steps = 10
    config.rl.kl_coef = 0.0
    config.rl.micro_batches = 8

    config.eval.num_examples = 500
    config.eval.batch_size = 64
    config.eval.every = 25
    config.checkpoint.every = 50
    return config
