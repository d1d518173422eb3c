"""Builds the task a config names (`config.task.name`) with its options."""
from __future__ import annotations

from jaxrl_self.config import ConfigError


def build_task(task_config, tokenizer=None):
    """A Task from `config.task`: arithmetic | countdown | word_arithmetic | jsonl | tfds.

    tokenizer: the pretrained model's tokenizer (`config.model.init_from`); tasks that render
    prompts with a chat template (word_arithmetic) need it, procedural ones bring their own.
    """
    name = task_config.name
    if name == "word_arithmetic":
        if tokenizer is None:
            raise ConfigError("config.task.name: task 'word_arithmetic' renders prompts with a pretrained model's chat "
                              "template; set config.model.init_from (a .gguf file, HF or orbax directory)")
        from jaxrl_self.tasks.word_arithmetic import WordArithmeticTask
        return WordArithmeticTask(tokenizer, ops=task_config.ops, digits=task_config.digits, answer_format=task_config.answer_format,
                                  seed=task_config.seed, test_size=task_config.test_size)
    if name == "arithmetic":
        from jaxrl_self.tasks.arithmetic import ArithmeticTask
        return ArithmeticTask(digits=task_config.digits, ops=task_config.ops, seed=task_config.seed, test_size=task_config.test_size,
                              demo_error_rate=task_config.demo_error_rate)
    if name == "countdown":
        from jaxrl_self.tasks.countdown import CountdownTask
        return CountdownTask(num_numbers=task_config.num_numbers, max_number=task_config.max_number, max_target=task_config.max_target,
                             seed=task_config.seed, test_size=task_config.test_size)
    raise ConfigError(f"config.task.name: task {name!r} needs a tokenizer from a model checkpoint (config.model.init_from); "
                      "procedural tasks are 'arithmetic' and 'countdown'")
