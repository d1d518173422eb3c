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
                              show_work=task_config.show_work, demo_error_rate=task_config.demo_error_rate,
                              self_check=task_config.self_check,
                              check_error_rate=task_config.check_error_rate)
    if name == "countdown":
        from jaxrl_self.tasks.countdown import CountdownTask
        return CountdownTask(num_numbers=task_config.num_numbers, max_number=task_config.max_number, max_target=task_config.max_target,
                             seed=task_config.seed, test_size=task_config.test_size)
    if name in ("jsonl", "tfds"):
        return _file_task(task_config, tokenizer)
    raise ConfigError(f"config.task.name: unknown task {name!r}")


def _file_task(task_config, tokenizer):
    """A JSONL or local-tfds task; prompts are tokenized with the pretrained model's tokenizer.

    Its prompts are rendered once, here: `task.template`, then the model's chat template as
    `task.chat_template` says (`tasks.chat`); `task.render_prompt` renders a raw question the same
    way (`jaxrl-self sample`).
    """
    from jaxrl_self.tasks.chat import prompt_renderer, render_examples

    name = task_config.name
    if tokenizer is None:
        raise ConfigError(f"config.task.name: task {name!r} needs the tokenizer of a pretrained model; "
                          "set config.model.init_from (a .gguf file, HF or orbax directory)")
    fields = dict(prompt_field=task_config.prompt_field, answer_field=task_config.answer_field,
                  answer_format=task_config.answer_format, template=task_config.template)
    if name == "jsonl":
        from jaxrl_self.tasks.jsonl import JsonlTask
        task = JsonlTask(name, {"train": task_config.train_file, "test": task_config.test_file}, **fields)
    else:
        from jaxrl_self.tasks.tfds_source import TfdsTask
        task = TfdsTask(name, task_config.dataset, task_config.data_dir, **fields)
    try:
        renderer = prompt_renderer(tokenizer, task_config.get("chat_template", "auto"), task_config.template)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if renderer.chat:
        task._examples = {split: render_examples(examples, renderer.chat_only) for split, examples in task._examples.items()}
    task.tokenizer = tokenizer
    task.render_prompt = renderer
    return task
