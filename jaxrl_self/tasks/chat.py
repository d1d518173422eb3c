"""Prompts as the model sees them: the task's template, then the model's chat template.

An instruct model expects its chat format; given raw text it often replies with nothing at all.
So a data task's prompt (JSONL, tfds) is rendered in two steps, once, when the task is built:

  1. `task.template` (``"{prompt}\\nPut the answer in \\boxed{}."``) wraps the dataset's question;
  2. when `task.chat_template` allows it, the result becomes one user message of the tokenizer's
     chat template (HF `tokenizer_config.json` / `chat_template.jinja`, or the GGUF metadata's
     `tokenizer.chat_template`), rendered with the generation prompt (``<|im_start|>assistant\\n``).

`Example.prompt` then holds the exact text the model continues, so training (SFT and RL),
evaluation and `jaxrl-self sample` (which renders its prompts with `prompt_renderer` of the run's
task) all see the same prompts. The encoders skip a BOS the template already wrote
(`tasks.encoding.encode_prompts`).

`task.chat_template`:
  "auto": apply the chat template when the tokenizer has one (a base model without one, or a
          character tokenizer, gets the templated text unchanged), unless `task.template` already
          spells the chat markup itself (then it is used as written, with a warning);
  "on":   always apply it; a tokenizer without a chat template is a config error;
  "off":  never apply it (a warning is logged when the tokenizer has one).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Callable

from jaxrl_self.tasks.base import Example
from jaxrl_self.tasks.jsonl import PROMPT_PLACEHOLDER, apply_template

CHAT_TEMPLATE_MODES = ("auto", "on", "off")
_SENTINEL = "\x00jaxrl-self-user-content\x00"
log = logging.getLogger(__name__)


def has_chat_template(tokenizer) -> bool:
    """Whether `tokenizer` can render chats (an `HFTokenizer` with a chat template)."""
    return getattr(tokenizer, "chat_template", None) is not None and hasattr(tokenizer, "apply_chat_template")


def chat_prompt(tokenizer, text: str) -> str:
    """`text` as the one user message of `tokenizer`'s chat template, generation prompt included."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)


def chat_markers(tokenizer) -> tuple[str, str]:
    """(before, after): what the chat template writes around a user message's content, stripped of
    surrounding whitespace; e.g. ("<|im_start|>user", "<|im_end|>\\n<|im_start|>assistant")."""
    rendered = chat_prompt(tokenizer, _SENTINEL)
    before, _, after = rendered.partition(_SENTINEL)
    return before.strip(), after.strip()


def _already_chat_formatted(tokenizer, template: str) -> bool:
    """Whether `template` (a `task.template`) already ends with the chat template's generation prompt."""
    after = chat_markers(tokenizer)[1]
    last_line = after.splitlines()[-1].strip() if after else ""
    return bool(last_line) and last_line in template


@dataclasses.dataclass(frozen=True)
class PromptRenderer:
    """Raw question -> the text the model continues: `template`, then the chat template when `chat`.

    Call it on a raw question; `chat_only` applies only the second step (to an already templated prompt).
    """

    template: str = PROMPT_PLACEHOLDER
    tokenizer: object = None
    chat: bool = False

    def chat_only(self, text: str) -> str:
        return chat_prompt(self.tokenizer, text) if self.chat else text

    def __call__(self, text: str) -> str:
        return self.chat_only(apply_template(self.template, text))


def check_chat_template_mode(mode: str) -> None:
    """Raises ValueError for a `task.chat_template` outside CHAT_TEMPLATE_MODES."""
    if mode not in CHAT_TEMPLATE_MODES:
        raise ValueError(f"config.task.chat_template: must be one of {CHAT_TEMPLATE_MODES}, got {mode!r}")


def prompt_renderer(tokenizer, mode: str = "auto", template: str = PROMPT_PLACEHOLDER) -> PromptRenderer:
    """The `PromptRenderer` of a task with `template` for `tokenizer` under `task.chat_template` = `mode`.

    Raises ValueError for an unknown mode, and for "on" with a tokenizer that has no chat template.
    """
    check_chat_template_mode(mode)
    available = has_chat_template(tokenizer)
    if mode == "off":
        if available:
            log.warning("config.task.chat_template='off': prompts are NOT rendered with the model's chat template; "
                        "an instruct model may reply with nothing")
        return PromptRenderer(template, tokenizer, chat=False)
    if not available:
        if mode == "on":
            raise ValueError("config.task.chat_template: 'on' but the model's tokenizer has no chat template "
                             "(neither in its tokenizer_config.json / chat_template.jinja nor in the GGUF metadata)")
        return PromptRenderer(template, tokenizer, chat=False)
    if mode == "auto" and _already_chat_formatted(tokenizer, template):
        log.warning("config.task.template already contains the chat template's generation prompt; it is used as "
                    "written (set config.task.chat_template='on' to apply the chat template anyway)")
        return PromptRenderer(template, tokenizer, chat=False)
    log.info("prompts are rendered with the model's chat template (config.task.chat_template=%r)", mode)
    return PromptRenderer(template, tokenizer, chat=True)


class RenderedExamples(Sequence[Example]):
    """`examples` with `render` applied to every prompt (and rephrasing) when indexed; slices give lists."""

    def __init__(self, examples: Sequence[Example], render: Callable[[str], str]):
        self._examples, self._render = examples, render

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return render_example(self._examples[index], self._render)


def render_example(example: Example, render: Callable[[str], str]) -> Example:
    return dataclasses.replace(example, prompt=render(example.prompt),
                               rephrasing=render(example.rephrasing) if example.rephrasing else "")


def render_examples(examples: Sequence[Example], render: Callable[[str], str]) -> Sequence[Example]:
    """`examples` with rendered prompts: a list for a list (rendered now), a lazy view otherwise."""
    if isinstance(examples, (list, tuple)):
        return [render_example(e, render) for e in examples]
    return RenderedExamples(examples, render)
