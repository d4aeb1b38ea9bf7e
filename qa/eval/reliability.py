"""How well scores are calibrated: the reliability diagram's bins, expected calibration error, Brier
score and the risk-coverage curve of selective answering. Pure numpy, on any scores and 0/1 outcomes."""

from __future__ import annotations

from typing import Any

import numpy as np

CALIBRATION_BINS = 10


def calibration_bins(scores: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Equal-width bins of the score over [0, 1]: count, mean score and accuracy of each (the
    reliability diagram); a score of exactly 1 falls in the last bin."""
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        chosen = index == b
        count = int(chosen.sum())
        rows.append(
            {
                "lower": b / bins,
                "upper": (b + 1) / bins,
                "count": count,
                "mean_score": float(scores[chosen].mean()) if count else None,
                "accuracy": float(correct[chosen].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(scores: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Sum over equal-width bins of (share of questions) x |mean score - accuracy|."""
    total = len(scores)
    gaps = [
        row["count"] / total * abs(row["mean_score"] - row["accuracy"])
        for row in calibration_bins(scores, correct, bins)
        if row["count"]
    ]
    return float(sum(gaps))


def brier_score(scores: np.ndarray, correct: np.ndarray) -> float:
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    return float(np.mean((scores - correct) ** 2)) if len(scores) else 0.0


def risk_coverage(scores: np.ndarray, correct: np.ndarray) -> tuple[list[dict[str, float]], float]:
    """Answering only the questions at or above a cut-off, most confident first: at each coverage the
    exact match among the answered and the lowest score answered; and the area under the curve of
    exact match against coverage (higher is better: 1 for a perfect ranking of a perfect model)."""
    scores, correct = np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if not len(scores):
        return [], 0.0
    order = np.argsort(-scores, kind="stable")
    answered = np.arange(1, len(scores) + 1)
    accuracy = np.cumsum(correct[order]) / answered
    points = [
        {"coverage": float(n / len(scores)), "exact_match": float(100 * a), "min_score": float(s)}
        for n, a, s in zip(answered.tolist(), accuracy.tolist(), scores[order].tolist())
    ]
    return points, float(accuracy.mean())
