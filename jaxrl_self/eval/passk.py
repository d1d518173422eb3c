"""Sampling-based evaluation metrics: pass@k, maj@k, mean@k (docs/algorithms.md#passk-majk-and-meank).

A *record* is one problem's evaluation: ``{"correct": [bool] * n}`` per sample, plus optionally
``"answers": [str | None] * n`` (extracted answers), ``"reference": str`` (the gold answer,
needed with "answers" for maj@k) and ``"task": str`` (for a per-task breakdown).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Equivalence = Callable[[str, str], bool]


def string_equal(a: str, b: str) -> bool:
    """The default answer equivalence: exact string equality."""
    return a == b


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `n` samples of which `c` are correct.

    ``1 - C(n-c, k) / C(n, k)``, computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (no huge
    binomials); exactly 1.0 when ``n - c < k``. E.g. (n, c, k) = (4, 2, 2) -> 5/6.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k(ns: Sequence[int], cs: Sequence[int], k: int) -> float:
    """pass@k averaged over problems; `ns[i]` samples and `cs[i]` correct for problem i."""
    if len(ns) != len(cs) or not len(ns):
        raise ValueError(f"need equally long, non-empty ns and cs, got {len(ns)} and {len(cs)}")
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(ns, cs)]))


def majority_answer(
    answers: Sequence[str | None], equivalent: Equivalence = string_equal
) -> tuple[str | None, int]:
    """The most common answer and its vote count; (None, 0) when no answer is given.

    None never votes. Answers are grouped into classes by `equivalent` against each class's
    first member (its representative, which is what is returned). Ties go to the class whose
    first member came earliest, so the result does not depend on anything but the order given.
    """
    representatives: list[str] = []
    counts: list[int] = []
    for answer in answers:
        if answer is None:
            continue
        for class_index, representative in enumerate(representatives):
            if answer == representative or equivalent(answer, representative):
                counts[class_index] += 1
                break
        else:
            representatives.append(answer)
            counts.append(1)
    if not counts:
        return None, 0
    winner = int(np.argmax(counts))  # argmax returns the first maximum: earliest class wins ties
    return representatives[winner], counts[winner]


def maj_at_k(
    answers_per_problem: Sequence[Sequence[str | None]],
    golds: Sequence[str],
    k: int,
    equivalent: Equivalence = string_equal,
) -> float:
    """maj@k: fraction of problems whose majority answer among the FIRST k samples matches gold.

    Uses the first k samples of each problem (not an average over random k-subsets). A problem
    whose k samples have no answer at all counts as wrong. `equivalent` groups votes and
    compares the winner with the gold answer.
    """
    if len(answers_per_problem) != len(golds) or not len(golds):
        raise ValueError(f"need one gold per problem and at least one problem, got {len(answers_per_problem)} and {len(golds)}")
    scores = []
    for answers, gold in zip(answers_per_problem, golds):
        if len(answers) < k:
            raise ValueError(f"maj@{k} needs at least {k} samples per problem, got {len(answers)}")
        voted, _ = majority_answer(answers[:k], equivalent)
        scores.append(voted is not None and equivalent(voted, gold))
    return float(np.mean(scores))


def mean_at_k(correct_per_problem: Sequence[Sequence[bool]], k: int) -> float:
    """mean@k: per-sample correctness averaged over the first k samples, then over problems."""
    if not len(correct_per_problem):
        raise ValueError("mean@k needs at least one problem")
    per_problem = []
    for correct in correct_per_problem:
        if len(correct) < k:
            raise ValueError(f"mean@{k} needs at least {k} samples per problem, got {len(correct)}")
        per_problem.append(np.mean(np.asarray(correct[:k], dtype=np.float64)))
    return float(np.mean(per_problem))


def _summarize_group(records: Sequence[Mapping[str, Any]], ks: Sequence[int], equivalent: Equivalence) -> dict:
    correct = [list(record["correct"]) for record in records]
    summary: dict[str, Any] = {
        "num_problems": len(records),
        "samples_per_problem": min(len(c) for c in correct),
    }
    for k in ks:
        summary[f"pass@{k}"] = mean_pass_at_k([len(c) for c in correct], [int(sum(c)) for c in correct], k)
    for k in ks:
        summary[f"mean@{k}"] = mean_at_k(correct, k)
    if all("answers" in record and "reference" in record for record in records):
        answers = [record["answers"] for record in records]
        golds = [record["reference"] for record in records]
        for k in ks:
            summary[f"maj@{k}"] = maj_at_k(answers, golds, k, equivalent)
    return summary


def summarize(
    per_problem_records: Sequence[Mapping[str, Any]],
    ks: Sequence[int] = (1,),
    equivalent: Equivalence = string_equal,
) -> dict[str, Any]:
    """Aggregates per-problem records (see module docstring) into pass@k, mean@k and maj@k.

    Returns ``{"num_problems", "samples_per_problem" (the smallest n), "pass@k", "mean@k",
    "maj@k" (only when every record has "answers" and "reference"), "per_task": {task: {same
    keys}}}``; "per_task" is present only when records carry a "task" key. Pass the math
    verifier's `answers_equivalent` as `equivalent` for math answers. Raises ValueError when a
    k exceeds some problem's number of samples.
    """
    if not per_problem_records:
        raise ValueError("summarize needs at least one record")
    summary = _summarize_group(per_problem_records, ks, equivalent)
    tasks = sorted({record["task"] for record in per_problem_records if "task" in record})
    if tasks:
        summary["per_task"] = {
            task: _summarize_group([r for r in per_problem_records if r.get("task") == task], ks, equivalent)
            for task in tasks
        }
    return summary


def _format_cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def to_markdown(summary: Mapping[str, Any]) -> str:
    """A Markdown table of a `summarize` result: one row for all problems, one per task."""
    rows = [("all", summary)] + sorted(summary.get("per_task", {}).items())
    columns = [key for key in summary if key != "per_task"]
    lines = [
        "| task | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, values in rows:
        lines.append(f"| {name} | " + " | ".join(_format_cell(values.get(column, "")) for column in columns) + " |")
    return "\n".join(lines) + "\n"
