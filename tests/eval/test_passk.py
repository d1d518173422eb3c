"""pass@k, maj@k, mean@k and the summary table (docs/algorithms.md#passk-majk-and-meank)."""
import itertools

import pytest

from jaxrl_self.eval.passk import (
    maj_at_k,
    majority_answer,
    mean_at_k,
    mean_pass_at_k,
    pass_at_k,
    summarize,
    to_markdown,
)


def brute_force_pass_at_k(n, c, k):
    """Fraction of k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_over_all_subsets():
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_worked_examples():
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 5) == pytest.approx(0.91667, abs=1e-5)
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert 0.0 < pass_at_k(2000, 1, 1) < 1e-3  # large n: no overflow
    assert mean_pass_at_k([4, 10], [2, 3], 1) == pytest.approx((0.5 + 0.3) / 2)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_majority_answer_ties_none_and_equivalence():
    assert majority_answer(["1", "2", "2", "1", None, None, None]) == ("1", 2)  # tie: earliest first seen
    assert majority_answer(["2", "1", "1", "2"]) == ("2", 2)
    assert majority_answer([None, "3", None]) == ("3", 1)
    assert majority_answer([None, None]) == (None, 0)
    assert majority_answer([]) == (None, 0)
    numeric = lambda a, b: float(a) == float(b)
    assert majority_answer(["0.5", "7", ".5", "7.0", "0.50"], numeric) == ("0.5", 3)
    assert majority_answer(["7", "0.5", ".5", "7.0"], numeric) == ("7", 2)


def test_maj_at_k_uses_the_first_k_samples():
    answers = [["1", "2", "2", "1", "1"], [None, None, "5", "5", "5"], ["9", None, "8", "8", "8"]]
    golds = ["1", "5", "9"]
    # k=1: "1" right, None wrong, "9" right. k=3: "2" wrong, "5" right, tie 9/8 -> "9" right.
    assert maj_at_k(answers, golds, 1) == pytest.approx(2 / 3)
    assert maj_at_k(answers, golds, 3) == pytest.approx(2 / 3)
    # k=5: "1" (3 votes) right, "5" right, "8" wrong.
    assert maj_at_k(answers, golds, 5) == pytest.approx(2 / 3)
    assert maj_at_k([["1.0", "1", "2"]], ["1"], 3, lambda a, b: float(a) == float(b)) == 1.0
    with pytest.raises(ValueError):
        maj_at_k(answers, golds, 6)


def test_mean_at_k():
    assert mean_at_k([[True, False, True, True], [False, False, True, True]], 2) == pytest.approx(0.25)
    assert mean_at_k([[True, False, True, True], [False, False, True, True]], 4) == pytest.approx(0.625)


def test_summarize_with_per_task_breakdown_and_markdown():
    records = [
        {"task": "gsm", "correct": [True, False, False, False], "answers": ["4", "5", "5", None], "reference": "4"},
        {"task": "gsm", "correct": [False, False, False, False], "answers": ["1", "2", "3", "3"], "reference": "9"},
        {"task": "countdown", "correct": [True, True, False, True], "answers": ["a", "a", "b", "a"], "reference": "a"},
    ]
    summary = summarize(records, ks=(1, 4))
    assert summary["num_problems"] == 3 and summary["samples_per_problem"] == 4
    assert summary["pass@1"] == pytest.approx((0.25 + 0.0 + 0.75) / 3)
    assert summary["pass@4"] == pytest.approx(2 / 3)
    assert summary["mean@4"] == pytest.approx(summary["pass@1"])
    assert summary["maj@1"] == pytest.approx(2 / 3)
    assert summary["maj@4"] == pytest.approx(1 / 3)  # "5" wins gsm problem 1
    assert summary["per_task"]["gsm"]["pass@4"] == pytest.approx(0.5)
    assert summary["per_task"]["countdown"]["maj@4"] == 1.0
    table = to_markdown(summary)
    lines = table.strip().splitlines()
    assert lines[0].startswith("| task | num_problems |") and "maj@4" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["all", "countdown", "gsm"]
    assert "0.3333" in lines[2]


def test_summarize_without_answers_or_tasks():
    summary = summarize([{"correct": [True, False]}, {"correct": [True, True]}], ks=(1, 2))
    assert set(summary) == {"num_problems", "samples_per_problem", "pass@1", "pass@2", "mean@1", "mean@2"}
    assert summary["pass@2"] == 1.0
    with pytest.raises(ValueError):
        summarize([{"correct": [True]}], ks=(2,))
