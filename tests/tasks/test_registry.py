"""build_task wires the file-backed sources (JSONL) to the pretrained model's tokenizer."""
import ml_collections
import pytest

from jaxrl_self.config import ConfigError
from jaxrl_self.tasks.arithmetic import make_tokenizer
from jaxrl_self.tasks.registry import build_task


def _jsonl_config(path):
    return ml_collections.ConfigDict(dict(name="jsonl", train_file=str(path), test_file=str(path), prompt_field="question",
                                          answer_field="answer", answer_format="gsm8k", template="{prompt} =",
                                          max_prompt_len=64, max_reference_len=32))


def test_jsonl_task_uses_the_given_tokenizer(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "2+2", "answer": "so #### 4"}\n')  # in the character tokenizer's alphabet
    tokenizer = make_tokenizer()
    task = build_task(_jsonl_config(path), tokenizer)
    assert task.tokenizer is tokenizer
    assert task.examples("train")[0].prompt == "2+2 ="
    assert task.examples("test")[0].reference == "4"
    assert task.score("#### 4", "4")["correct"] == 1.0


def test_jsonl_task_without_a_pretrained_tokenizer_is_a_config_error(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "2+2?", "answer": "#### 4"}\n')
    with pytest.raises(ConfigError, match="init_from"):
        build_task(_jsonl_config(path))
