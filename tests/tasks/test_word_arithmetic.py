"""word_arithmetic: strict-format verifier, one-shot chat rendering, disjoint splits (no model needed)."""
import pytest

from jaxrl_self.config import ConfigError
from jaxrl_self.tasks.registry import build_task
from jaxrl_self.tasks.word_arithmetic import DEMOS, WordArithmeticTask, parse_answer


class ChatTokenizer:
    """Just enough of HFTokenizer for the task: a ChatML-like `apply_chat_template`, and one id per
    character for the prompt-length check when the task is built."""

    bos_id = 1

    def encode(self, text):
        return [ord(character) for character in text]

    def apply_chat_template(self, messages, add_generation_prompt=True):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


@pytest.mark.parametrize("completion, expected", [
    ("<answer>42</answer>", 42), ("The total is <answer> 42 </answer>", 42), ("<answer>-3</answer><|im_end|>", -3),
    ("<answer>4</answer> then <answer>5</answer>", 5), ("42", None), ("<answer>forty</answer>", None),
    ("<answer>4.5</answer>", None), ("<answer>42", None)])
def test_tag_format_is_strict(completion, expected):
    assert parse_answer(completion, "tag") == expected


@pytest.mark.parametrize("completion, expected", [
    ("42", 42), (" 42.\n", 42), ("-7", -7), ("The answer is 42", None), ("42 apples", None), ("<answer>42</answer>", None)])
def test_number_format_is_strict(completion, expected):
    assert parse_answer(completion, "number") == expected


def test_prompts_are_one_shot_chats_with_the_matching_demo():
    task = WordArithmeticTask(ChatTokenizer(), ops="+-*", digits=2)
    for example in task.examples("train")[:30]:
        assert example.prompt.endswith("<|im_start|>assistant\n")
        assert example.prompt.count("<|im_start|>user") == 2 and "<answer>" in example.prompt
        assert sum(demo in example.prompt for demo, _ in DEMOS.values()) == 1
        assert example.solution == f"<answer>{example.reference}</answer>"
        assert example.rephrasing != example.prompt and example.rephrasing.endswith("<|im_start|>assistant\n")
        assert task.score(example.solution, example.reference) == {"reward": 1.0, "correct": 1.0, "format_ok": 1.0}
        assert task.score("<answer>-1000</answer>", example.reference)["format_ok"] == 1.0
        assert task.score(example.reference, example.reference)["reward"] == 0.0  # bare number: wrong format


def test_splits_are_disjoint_problems_and_operands_bounded():
    task = WordArithmeticTask(ChatTokenizer(), ops="+-", digits=2, test_size=50)

    def problem(example):
        question = example.prompt.rsplit("<|im_start|>user\n", 1)[1]
        return tuple(int(w.rstrip(".")) for w in question.split() if w.rstrip(".").isdigit()), example.reference

    test = {problem(e) for e in task.examples("test")}
    train = {problem(e) for e in task.examples("train")[:2000]}
    assert not test & train
    assert all(0 <= int(ref) <= 198 and all(1 <= n <= 99 for n in numbers) for numbers, ref in train)


def test_comparison_asks_for_the_larger_of_two_different_amounts():
    task = WordArithmeticTask(ChatTokenizer(), ops=">", digits=2, test_size=50)
    for example in task.examples("test"):
        question = example.prompt.rsplit("<|im_start|>user\n", 1)[1]
        a, b = (int(w.rstrip(".,")) for w in question.split() if w.rstrip(".,").isdigit())
        assert a != b and int(example.reference) == max(a, b)
        assert "fuller box" in question or "bigger bag" in question


def test_registry_needs_a_pretrained_tokenizer():
    import ml_collections

    cfg = ml_collections.ConfigDict(dict(name="word_arithmetic", ops="+", digits=1, answer_format="number", seed=0, test_size=8,
                                         max_prompt_len=512, max_reference_len=32))  # one id per character
    with pytest.raises(ConfigError, match="config.model.init_from"):
        build_task(cfg)
    task = build_task(cfg, ChatTokenizer())
    assert task.tokenizer is not None and len(task.examples("test")) == 8
    assert "Reply with only the final number." in task.examples("test")[0].prompt
