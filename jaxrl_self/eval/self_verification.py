"""How good is the policy as its own verifier: metrics of self-scores against the exact verifier
(docs/algorithms.md#laser-last-token-self-reward).

Scores are any per-sample self-reward (LaSeR's `r_s`, a verdict's probability); "correct" is the
verifier's label of the same sample. All functions take NumPy-compatible sequences.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float:
    """Area under the ROC curve of `scores` separating correct from incorrect samples: the
    probability that a random correct sample scores above a random incorrect one (ties count 1/2).
    NaN when either class is empty."""
    scores, correct = np.asarray(scores, np.float64), np.asarray(correct, bool)
    positives, negatives = scores[correct], scores[~correct]
    if not len(positives) or not len(negatives):
        return float("nan")
    ranks = _average_ranks(np.concatenate([positives, negatives]))
    rank_sum = ranks[:len(positives)].sum()
    return float((rank_sum - len(positives) * (len(positives) + 1) / 2) / (len(positives) * len(negatives)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + 1 + end) / 2
            start = end
    return ranks


def balanced_accuracy(scores: Sequence[float], correct: Sequence[bool], threshold: float = 0.5) -> float:
    """Mean of the verdict's accuracy on correct and on incorrect samples, the verdict being
    "correct" iff score > threshold. NaN when either class is empty."""
    said_correct = np.asarray(scores, np.float64) > threshold
    correct = np.asarray(correct, bool)
    if correct.all() or not correct.any():
        return float("nan")
    return float(0.5 * (said_correct[correct].mean() + (~said_correct[~correct]).mean()))


def best_of_n(scores: Sequence[Sequence[float]], correct: Sequence[Sequence[bool]]) -> float:
    """Fraction of problems whose highest-scoring sample is correct; `[problems][n]` each (the
    first of tied samples is picked)."""
    return float(np.mean([c[int(np.argmax(s))] for s, c in zip(scores, correct)]))


def self_weighted_vote(answers: Sequence[str | None], scores: Sequence[float]) -> str | None:
    """The answer with the largest `W(a) = sum of clip(score, 0, 1)` over the samples that gave it
    (samples without an answer do not vote; ties go to the answer seen first; None if none)."""
    weights: dict[str, float] = {}
    for answer, score in zip(answers, scores):
        if answer is not None:
            weights[answer] = weights.get(answer, 0.0) + float(np.clip(score, 0.0, 1.0))
    return max(weights, key=weights.get) if weights else None


def summarize_self_verification(records) -> dict:
    """The metrics above over per-problem records `{"scores": [n], "correct": [n], "answers": [n],
    "reference": str}` (n samples each, the same n): "auroc", "balanced_accuracy", the mean score of
    correct and of wrong samples ("score_correct", "score_wrong": NaN for an empty class) over all samples,
    "pass@1" (mean correctness), "best_of_n", "maj@n" (plain majority vote) and "self_weighted_maj@n"
    (`self_weighted_vote`), a vote being right when its answer equals the reference string."""
    n = len(records[0]["scores"])
    scores = np.concatenate([r["scores"] for r in records])
    correct = np.concatenate([r["correct"] for r in records]).astype(bool)
    plain = [self_weighted_vote(r["answers"], [1.0] * n) for r in records]  # every vote weighs 1
    weighted = [self_weighted_vote(r["answers"], r["scores"]) for r in records]
    return {"auroc": auroc(scores, correct), "balanced_accuracy": balanced_accuracy(scores, correct),
            "score_correct": float(scores[correct].mean()) if correct.any() else float("nan"),
            "score_wrong": float(scores[~correct].mean()) if not correct.all() else float("nan"),
            "pass@1": float(correct.mean()), "best_of_n": best_of_n([r["scores"] for r in records], [r["correct"] for r in records]),
            f"maj@{n}": float(np.mean([a == r["reference"] for a, r in zip(plain, records)])),
            f"self_weighted_maj@{n}": float(np.mean([a == r["reference"] for a, r in zip(weighted, records)]))}
