"""JsonlTask: parsing, answer formats, and DataError messages for bad lines."""
import json

import pytest

from jaxrl_self.tasks.errors import DataError
from jaxrl_self.tasks.jsonl import JsonlTask, parse_answer


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_gsm8k_file_reads_examples_in_order_and_skips_blank_lines(tmp_path):
    train = write_lines(tmp_path / "train.jsonl", [
        json.dumps({"question": "What is 40+2?", "answer": "40+2=42\n#### 42"}),
        "",
        "   ",
        json.dumps({"question": "Big?", "answer": "so #### 1,234", "extra": 1}),
    ])
    task = JsonlTask("gsm", {"train": train}, template="Q: {prompt}\nPut the answer in \\boxed{}.")
    examples = task.examples("train")
    assert task.name == "gsm"
    assert len(examples) == 2
    assert examples[0].prompt == "Q: What is 40+2?\nPut the answer in \\boxed{}."
    assert examples[0].reference == "42"
    assert examples[0].solution == "40+2=42\n#### 42"
    assert [e.uid for e in examples] == [0, 1]
    assert examples[1].reference == "1234"


def test_boxed_and_plain_formats(tmp_path):
    boxed = write_lines(tmp_path / "math.jsonl", [
        json.dumps({"problem": "p", "solution": "so \\boxed{2} then \\boxed{\\frac{1}{2}}."}),
    ])
    task = JsonlTask("math", {"test": boxed}, prompt_field="problem", answer_field="solution", answer_format="boxed")
    assert task.examples("test")[0].reference == "\\frac{1}{2}"
    plain = write_lines(tmp_path / "plain.jsonl", [json.dumps({"question": "q", "answer": " 7 "})])
    example = JsonlTask("p", {"train": plain}, answer_format="plain").examples("train")[0]
    assert (example.reference, example.solution) == ("7", "")


def test_parse_answer():
    assert parse_answer("a #### b #### -3", "gsm8k")[0] == "-3"
    assert parse_answer("\\fbox{x}", "boxed") == ("x", "\\fbox{x}")
    with pytest.raises(ValueError, match="boxed"):
        parse_answer("\\boxed{unclosed", "boxed")
    with pytest.raises(ValueError, match="####"):
        parse_answer("no marker", "gsm8k")
    with pytest.raises(ValueError, match="empty"):
        parse_answer("  ", "plain")


def test_score_uses_the_math_verifier(tmp_path):
    path = write_lines(tmp_path / "t.jsonl", [json.dumps({"question": "q", "answer": "#### 0.5"})])
    task = JsonlTask("t", {"train": path})
    reference = task.examples("train")[0].reference
    assert task.score("so \\boxed{\\frac{1}{2}}", reference)["correct"] == 1.0
    assert task.score("so \\boxed{3}", reference)["correct"] == 0.0


@pytest.mark.parametrize("bad_line, expected", [
    ('{"question": "q", "answer": "#### 1"', "invalid JSON"),
    ('[1, 2]', "expected a JSON object"),
    ('{"answer": "#### 1"}', "'question' is missing"),
    ('{"question": "q", "answer": 42}', "'answer' must be a string"),
    ('{"question": "q", "answer": "no marker"}', "'answer'.*####"),
])
def test_bad_line_raises_data_error_with_file_and_line_number(tmp_path, bad_line, expected):
    path = write_lines(tmp_path / "bad.jsonl", [
        json.dumps({"question": "q", "answer": "#### 1"}),
        "",
        bad_line,
    ])
    with pytest.raises(DataError, match=expected) as error:
        JsonlTask("bad", {"train": path})
    assert f"{path}:3:" in str(error.value)


def test_invalid_utf8_line_names_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "#### 1"}\n{"question": "caf\xe9", "answer": "#### 1"}\n')
    with pytest.raises(DataError, match=f"{path}:2: line is not valid UTF-8"):
        JsonlTask("bad", {"train": path})


def test_missing_file_and_unknown_split(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=str(missing)):
        JsonlTask("m", {"train": missing})
    path = write_lines(tmp_path / "ok.jsonl", [json.dumps({"question": "q", "answer": "#### 1"})])
    with pytest.raises(DataError, match="no split 'test'"):
        JsonlTask("m", {"train": path}).examples("test")
    with pytest.raises(ValueError, match="answer_format"):
        JsonlTask("m", {"train": path}, answer_format="latex")
    with pytest.raises(ValueError, match="template"):
        JsonlTask("m", {"train": path}, template="no placeholder")
