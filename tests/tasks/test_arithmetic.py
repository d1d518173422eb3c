"""The arithmetic task's self-check solutions: format, the verifier on them, and the demonstrated error rate."""
import re

import numpy as np
import pytest

from jaxrl_self.tasks.arithmetic import ArithmeticTask, self_check_text

SELF_CHECK = re.compile(r"<think>(\d+)\+(\d+)=(\d+) (\d+)\+(\d+)=(\d+)</think><answer>(\d+)</answer>")


def test_self_check_text_is_fixed_width():
    assert self_check_text(3, 5, "+", (8, 8), 8, width=2) == "<think>3+5=08 5+3=08</think><answer>08</answer>"
    assert self_check_text(47, 8, "-", (39, 40), 40, width=3) == "<think>47-8=039 -8+47=040</think><answer>040</answer>"


def test_exact_self_check_demonstrations_are_right_and_verified():
    task = ArithmeticTask(digits=2, self_check=True)
    for example in task.examples("train")[:50]:
        a, b, first, b2, a2, second, answer = (int(x) for x in SELF_CHECK.fullmatch(example.solution).groups())
        assert (b2, a2) == (b, a) and first == second == answer == a + b == int(example.reference)
        assert task.score(example.solution, example.reference)["correct"] == 1.0


def test_check_errors_are_independent_off_by_one_and_the_answer_is_one_of_the_two():
    rate = 0.3
    task = ArithmeticTask(digits=1, self_check=True, check_error_rate=rate)
    wrong, disagreeing = [], 0
    for example in task.examples("train")[:2000]:
        _, _, first, _, _, second, answer = (int(x) for x in SELF_CHECK.fullmatch(example.solution).groups())
        truth = int(example.reference)
        assert abs(first - truth) <= 1 and abs(second - truth) <= 1 and answer in (first, second)
        wrong.append((first != truth, second != truth))
        disagreeing += first != second
    wrong = np.array(wrong)
    np.testing.assert_allclose(wrong.mean(axis=0), [rate, rate], atol=0.04)
    both = wrong.all(axis=1).mean()
    assert both == pytest.approx(rate * rate, abs=0.03)  # independent
    assert disagreeing > 0


def test_bad_check_error_rate_is_rejected():
    with pytest.raises(ValueError, match="check_error_rate"):
        ArithmeticTask(self_check=True, check_error_rate=1.5)
