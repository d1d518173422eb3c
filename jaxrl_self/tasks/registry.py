"""Builds the task a config names (`config.task.name`) with its options, and checks its examples once."""
from __future__ import annotations

from jaxrl_self.errors import ConfigError
from jaxrl_self.tasks.encoding import prompt_length
from jaxrl_self.tasks.errors import DataError
from jaxrl_self.tasks.procedural import ProceduralExamples

PROCEDURAL_SCAN = 256  # examples per split of a procedural task that `check_examples` reads


def build_task(task_config, tokenizer=None):
    """A Task from `config.task`: arithmetic | arithmetic_mixed | countdown | word_arithmetic | jsonl | tfds, whose
    examples fit `task.max_prompt_len` and `task.max_reference_len` (`check_examples`).

    tokenizer: the pretrained model's tokenizer (`config.model.init_from`); tasks that render
    prompts with a chat template (word_arithmetic) need it, procedural ones bring their own.
    """
    task = _make_task(task_config, tokenizer)
    check_examples(task, task_config.max_prompt_len, task_config.max_reference_len)
    return task


def check_examples(task, max_prompt_len: int, max_reference_len: int) -> None:
    """Raises DataError, naming the example (a JSONL task: its file and line), for an empty split,
    a prompt longer than `max_prompt_len` tokens (as rendered, with BOS) or a reference answer
    longer than `max_reference_len` bytes (UTF-8), so that no run fails when it draws that example.
    Data tasks: every example; procedural tasks draw every instance alike: the first
    `PROCEDURAL_SCAN` of each split."""
    where = getattr(task, "where", lambda split, index: f"task {task.name!r}, {split} example {index}")
    for split in ("train", "test"):
        examples = task.examples(split)
        if not len(examples):
            raise DataError(f"task {task.name!r}: the {split} split has no examples")
        if isinstance(examples, ProceduralExamples):
            examples = examples[:PROCEDURAL_SCAN]
        for index, example in enumerate(examples):
            try:
                length = prompt_length(task.tokenizer, example.prompt)
            except ValueError as error:
                raise DataError(f"{where(split, index)}: the prompt cannot be tokenized: {error}") from None
            if length > max_prompt_len:
                raise DataError(f"{where(split, index)}: the prompt is {length} tokens (with BOS), more than "
                                f"config.task.max_prompt_len = {max_prompt_len}")
            size = len(example.reference.encode("utf-8"))
            if size > max_reference_len:
                raise DataError(f"{where(split, index)}: the reference answer {example.reference[:40]!r} is {size} bytes, "
                                f"more than config.task.max_reference_len = {max_reference_len}")


def _make_task(task_config, tokenizer):
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
    if name == "arithmetic_mixed":
        from jaxrl_self.tasks.arithmetic import MixedArithmeticTask
        return MixedArithmeticTask(digits=task_config.digits, ops=task_config.ops, seed=task_config.seed,
                                   test_size=task_config.test_size, show_work=task_config.show_work,
                                   demo_error_rate=task_config.demo_error_rate)
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
                  answer_format=task_config.answer_format, template=task_config.template,
                  category_field=task_config.get("category_field", "category"))
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
