"""Chat templates on data-task prompts (issue 38): rendered once by the task, so that training (SFT
and RL), `eval` and `sample` all see the same text; `task.chat_template` = auto | on | off. A
trained run exported to Hugging Face (`jaxrl-self export`) keeps the template and the logits.

The model: a tiny random Llama written as a GGUF file whose metadata carries a ChatML template
(`tests/tiny_models.py`); plus an instruct-style BPE tokenizer trained here with the `tokenizers`
library and a different template in its `tokenizer_config.json`. Nothing is downloaded.
"""
from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
import pytest
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from jaxrl_self import cli
from jaxrl_self.config import ConfigError, load_config_file, validate
from jaxrl_self.models.hf_tokenizer import HFTokenizer
from jaxrl_self.recipes import train_and_evaluate
from jaxrl_self.recipes.export import export_run
from jaxrl_self.recipes.runs import evaluate_run, load_run, sample_run
from jaxrl_self.tasks.arithmetic import make_tokenizer
from jaxrl_self.tasks.chat import chat_markers, prompt_renderer
from jaxrl_self.tasks.registry import build_task
from tiny_job import REPO
from tiny_models import build_hf_model, hf_logits, jax_logits, tokenizer_tokens, write_tiny_gguf

USER_TURN, ASSISTANT_TURN = "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n"  # tiny_models.CHAT_TEMPLATE
TEMPLATE = "{prompt} Answer after ####."
QUESTIONS = [(f"What is {a}+{b}?", f"{a}+{b}={a + b} #### {a + b}") for a, b in ((2, 3), (4, 1), (3, 3), (5, 2), (1, 1), (6, 2))]


def _jsonl(path):
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    return path


def _task_config(path, **overrides):
    return ml_collections.ConfigDict({**dict(name="jsonl", train_file=str(path), test_file=str(path), prompt_field="question",
                                             answer_field="answer", answer_format="gsm8k", template=TEMPLATE, max_prompt_len=64,
                                             max_reference_len=32), **overrides})


@pytest.fixture(scope="module")
def instruct_tokenizer(tmp_path_factory):
    """A BPE tokenizer trained here, saved as transformers would, with a Zephyr-style chat template."""
    directory = tmp_path_factory.mktemp("instruct_tokenizer")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    specials = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([q + " " + a for q, a in QUESTIONS] * 20, trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    template = ("{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '</s>\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "chat_template": template}))
    return HFTokenizer(str(directory))


def test_jsonl_prompts_go_through_the_tokenizer_config_chat_template(tmp_path, instruct_tokenizer):
    path = _jsonl(tmp_path / "data.jsonl")
    task = build_task(_task_config(path), instruct_tokenizer)  # no chat_template key: "auto"
    expected = "<s><|user|>\nWhat is 2+3? Answer after ####.</s>\n<|assistant|>\n"
    assert task.examples("train")[0].prompt == expected
    assert task.examples("test")[:2][0].prompt == expected
    assert task.render_prompt("What is 2+3?") == expected  # what `sample` sends
    assert chat_markers(instruct_tokenizer) == ("<s><|user|>", "</s>\n<|assistant|>")
    ids = instruct_tokenizer.encode(expected)
    assert ids[0] == instruct_tokenizer.bos_id and ids.count(instruct_tokenizer.bos_id) == 1  # the template's BOS, once

    off = build_task(_task_config(path, chat_template="off"), instruct_tokenizer)
    assert off.examples("train")[0].prompt == "What is 2+3? Answer after ####."
    assert off.render_prompt("What is 2+3?") == "What is 2+3? Answer after ####."


def test_modes_and_hand_written_templates(tmp_path, instruct_tokenizer):
    path = _jsonl(tmp_path / "data.jsonl")
    by_hand = "<|user|>\n{prompt}</s>\n<|assistant|>\n"  # the workaround: not wrapped a second time
    assert build_task(_task_config(path, template=by_hand), instruct_tokenizer).examples("train")[0].prompt == \
        "<|user|>\nWhat is 2+3?</s>\n<|assistant|>\n"
    forced = build_task(_task_config(path, template=by_hand, chat_template="on"), instruct_tokenizer)
    assert forced.examples("train")[0].prompt.count("<|assistant|>") == 2
    char_tokenizer = make_tokenizer()  # no chat template: "auto" leaves prompts alone, "on" is an error
    assert prompt_renderer(char_tokenizer, "auto", "Q: {prompt}")("1+1") == "Q: 1+1"
    with pytest.raises(ConfigError, match="chat_template.*no chat template"):
        build_task(_task_config(path, chat_template="on"), char_tokenizer)
    config = load_config_file(REPO / "configs" / "default.py")
    assert config.task.chat_template == "auto"
    config.task.chat_template = "always"
    with pytest.raises(ConfigError, match=r"config.task.chat_template: must be one of \('auto', 'on', 'off'\)"):
        validate(config)


class PromptSpy:
    """Records every prompt batch the encoders see: (where, prompt texts, token rows)."""

    def __init__(self, monkeypatch):
        import jaxrl_self.eval.evaluate as evaluate_module
        import jaxrl_self.tasks.encoding as encoding
        import jaxrl_self.train.context as context

        self.calls = []
        original = encoding.encode_prompts
        for where, module in (("sft", encoding), ("rl", context), ("eval", evaluate_module)):
            monkeypatch.setattr(module, "encode_prompts", self._spy(where, original))

    def _spy(self, where, original):
        def encode(tokenizer, prompts, prompt_len):
            tokens, mask = original(tokenizer, prompts, prompt_len)
            self.calls.append((where, list(prompts), [row[m].tolist() for row, m in zip(tokens, mask)]))
            return tokens, mask
        return encode

    def take(self, where=None):
        calls = [c for c in self.calls if where is None or c[0] == where]
        self.calls = [c for c in self.calls if c not in calls]
        return calls


def _assert_rendered(calls, bos_id):
    assert calls
    for _, prompts, rows in calls:
        for prompt, ids in zip(prompts, rows):
            assert prompt.startswith(USER_TURN) and prompt.endswith(ASSISTANT_TURN), prompt
            assert ids[0] == bos_id and ids[1] != bos_id  # <|im_start|> is the BOS: written once, by the template


def test_training_eval_and_sample_see_the_chat_template(tmp_path, monkeypatch, capsys):
    model = build_hf_model("llama", vocab_size=len(tokenizer_tokens()[0]), num_hidden_layers=1, hidden_size=32,
                           intermediate_size=64, num_attention_heads=2, num_key_value_heads=1)
    gguf_path = str(tmp_path / "tiny_instruct.gguf")
    write_tiny_gguf(gguf_path, model, tensor_types={})  # carries tokenizer.chat_template (ChatML)
    data = _jsonl(tmp_path / "data.jsonl")
    config = load_config_file(REPO / "configs" / "default.py")
    config.model.update(dict(init_from=gguf_path, max_position_embeddings=128))
    config.task.update(dict(name="jsonl", train_file=str(data), test_file=str(data), prompt_field="question",
                            answer_field="answer", answer_format="gsm8k", template=TEMPLATE, max_prompt_len=64))
    config.sft.update(dict(steps=1, batch_size=2, warmup_steps=0))
    config.rl.update(dict(steps=1, prompts_per_step=2, group_size=2, max_new_tokens=24))
    config.eval.update(dict(num_examples=2, batch_size=2, every=1))
    config.checkpoint.every = 1
    config.mesh.update(dict(num_devices=1, data=1, fsdp=1, tensor=1))
    validate(config)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "xla_cache"))  # eval/sample reuse training's programs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    min_compile_time = jax.config.jax_persistent_cache_min_compile_time_secs
    spy = PromptSpy(monkeypatch)
    workdir = tmp_path / "run"
    try:
        train_and_evaluate(config, workdir)
        bos = 1  # tiny_models: bos_token_id 1 = <|im_start|>
        for where in ("sft", "rl", "eval"):  # the warm start, the RL steps and the held-out evaluations
            _assert_rendered(spy.take(where), bos)

        results = evaluate_run(workdir)  # the sampler training's evaluations compiled (persistent cache)
        _assert_rendered(spy.take(), bos)
        assert results["samples"][0]["prompt"] == USER_TURN + "What is 2+3? Answer after ####." + ASSISTANT_TURN
        assert results["max_new_tokens"] == config.rl.max_new_tokens

        completions = sample_run(workdir, ["What is 7+1?", "What is 2+2?"], max_new_tokens=3)
        [(_, prompts, rows)] = spy.take()
        _assert_rendered([(None, prompts, rows)], bos)
        assert prompts[0] == USER_TURN + "What is 7+1? Answer after ####." + ASSISTANT_TURN  # as training rendered it
        assert len(completions) == 2 and len(completions[0]) == 1
        sample_run(workdir, ["raw text", "more"], raw=True, max_new_tokens=3)
        assert spy.take()[0][1] == ["raw text", "more"]

        # the trained run exported to Hugging Face: transformers loads the model, the tokenizer with its chat template
        export_run(workdir, tmp_path / "hf")
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
        user = [{"role": "user", "content": "What is 2+3? Answer after ####."}]
        assert hf_tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == results["samples"][0]["prompt"]
        run, params = load_run(workdir)
        text = results["samples"][0]["prompt"] + "2+3=5 #### 5"
        ids = [bos, *run.tokenizer.encode(text)]
        assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
        assert float(np.max(np.abs(jax_logits(run.graphdef, params, ids) - hf_logits(tmp_path / "hf", ids)))) < 1e-4

        # usage errors of a run: one line, exit 2
        for argv, message in ((["--prompt", "x" * 80], "--prompt 1 is"), (["--prompt", "hi", "--max-new-tokens", "100"], "context")):
            capsys.readouterr()
            assert cli.main(["sample", "--workdir", str(workdir), *argv]) == 2
            err = capsys.readouterr().err
            assert err.startswith("jaxrl-self: error: ") and message in err and err.count("\n") == 1, err
    finally:
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)
