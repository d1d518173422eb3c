"""The arithmetic task's self-check solutions: format, the verifier on them, and the demonstrated error rate."""
import re

import numpy as np
import pytest

from jaxrl_self.tasks.arithmetic import ArithmeticTask, self_check_text

SELF_CHECK = re.compile(r"<think>(\d+)\+(\d+)=(\d+) (\d+)\+(\d+)=(\d+)</think><answer>(\d+)</answer>")


def test_self_check_text_is_fixed_width():
    assert self_check_text(3, 5, "+", (8, 8), 8, width=2) == "<think>3+5=08 5+3=08</think><answer>08</answer>"
    assert self_check_text(47, 8, "-", (39, 40), 40, width=3) == "<think>47-8=039 -8+47=040</think><answer>040</answer>"


def test_self_check_with_work_reads_both_results_off_the_column_work():
    assert (self_check_text(47, 85, "+", (132, 133), 512, width=3, show_work=True)
            == "<think>7+5=12 4+8+1=13 =132 =133</think><answer>512</answer>")
    example = ArithmeticTask(digits=2, self_check=True).examples("train")[0]
    a, b = (int(x) for x in example.prompt[:-1].split("+"))
    assert example.solution == self_check_text(a, b, "+", (a + b, a + b), a + b, width=3, show_work=True)


def test_exact_self_check_demonstrations_are_right_and_verified():
    task = ArithmeticTask(digits=2, self_check=True, show_work=False)
    for example in task.examples("train")[:50]:
        a, b, first, b2, a2, second, answer = (int(x) for x in SELF_CHECK.fullmatch(example.solution).groups())
        assert (b2, a2) == (b, a) and first == second == answer == a + b == int(example.reference)
        assert task.score(example.solution, example.reference)["correct"] == 1.0


def test_check_errors_are_independent_off_by_one_and_disagreement_is_answered_with_a_guess():
    rate = 0.3
    task = ArithmeticTask(digits=1, self_check=True, check_error_rate=rate, show_work=False)
    wrong, guesses = [], []
    for example in task.examples("train")[:2000]:
        _, _, first, _, _, second, answer = (int(x) for x in SELF_CHECK.fullmatch(example.solution).groups())
        truth = int(example.reference)
        assert abs(first - truth) <= 1 and abs(second - truth) <= 1
        if first == second:
            assert answer == first
        else:
            guesses.append(answer)
        wrong.append((first != truth, second != truth))
    wrong = np.array(wrong)
    np.testing.assert_allclose(wrong.mean(axis=0), [rate, rate], atol=0.04)
    both = wrong.all(axis=1).mean()
    assert both == pytest.approx(rate * rate, abs=0.03)  # independent
    # a disagreement is answered with a uniform guess at the answer's width (2 digits): 00..99
    assert len(guesses) == pytest.approx(2000 * (2 * rate * (1 - rate) + rate * rate / 2), rel=0.15)
    assert len(set(guesses)) > 80 and 0 <= min(guesses) and max(guesses) <= 99
    assert np.mean(guesses) == pytest.approx(49.5, abs=5)


def test_bad_check_error_rate_is_rejected():
    with pytest.raises(ValueError, match="check_error_rate"):
        ArithmeticTask(self_check=True, check_error_rate=1.5)
