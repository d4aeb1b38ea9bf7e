"""A score that is a probability: the calibrator, and the measures of how well scores are calibrated.

An answer's raw confidence is its span's log-probability among all valid spans of its window
(`qa.eval.decoding.span_log_normalizers`): a property of the answer, not of --n-best or --top-k.
The calibrator maps it to the probability that the answer is exactly right (SQuAD exact match):
``sigmoid(slope * log_prob + intercept)`` (Platt scaling), fitted by maximum likelihood on labelled
questions. Platt over isotonic: two numbers that store in config.json and cannot overfit a few
hundred questions; bench/calibration.py measures both.
Pure numpy: usable from a notebook on any set of scores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MIN_QUESTIONS_TO_FIT = 200  # below this the fit says more about the sample than about the model
CALIBRATION_BINS = 10


@dataclass
class Calibrator:
    """Platt scaling of a span's log-probability; ``fitted_on``: how many questions it was fitted on."""

    slope: float
    intercept: float
    fitted_on: int
    feature: str = "span_log_prob"
    method: str = "platt"

    def confidence(self, log_prob: float | np.ndarray) -> Any:
        return _sigmoid(self.slope * np.asarray(log_prob, dtype=np.float64) + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> Calibrator | None:
        """The calibrator a config.json stores, or None for a value that is not one (an unknown method)."""
        if not isinstance(value, dict) or value.get("method") != "platt" or value.get("feature") != "span_log_prob":
            return None
        try:
            slope, intercept, fitted_on = float(value["slope"]), float(value["intercept"]), int(value["fitted_on"])
        except (KeyError, TypeError, ValueError):
            return None
        if not (math.isfinite(slope) and math.isfinite(intercept)):
            return None
        return cls(slope, intercept, fitted_on)


def span_confidence(log_prob: float | None, calibrator: Calibrator | None) -> float:
    """The confidence of a span answer: calibrated where there is a calibrator."""
    if log_prob is None:
        return 0.0
    return float(calibrator.confidence(log_prob) if calibrator is not None else uncalibrated_confidence(log_prob))


def no_answer_confidence(null_score: float, best_span_score: float | None, threshold: float | None) -> float:
    """The probability that "no answer" is right: a sigmoid of null score - best span score - threshold,
    above 0.5 exactly when the model abstains (the official script's no-answer probability)."""
    if best_span_score is None:
        return 1.0
    return float(_sigmoid(np.float64(null_score - best_span_score - (threshold or 0.0))))


def candidate_confidence(
    candidate: Any, prediction: Any, calibrator: Calibrator | None, threshold: float | None
) -> float:
    """The score of one n-best candidate (`qa.eval.decoding.Candidate`) of ``prediction``."""
    if candidate.text == "" and candidate.log_prob is None and prediction.null_score is not None:
        return no_answer_confidence(prediction.null_score, prediction.score, threshold)
    return span_confidence(candidate.log_prob, calibrator)


def prediction_confidence(prediction: Any, calibrator: Calibrator | None, threshold: float | None) -> float:
    """The score of the answer a prediction reports (its span, or "no answer" when it abstains)."""
    if prediction.no_answer:
        return no_answer_confidence(prediction.null_score, prediction.score, threshold)
    return span_confidence(prediction.log_prob, calibrator)


def uncalibrated_confidence(log_prob: float | np.ndarray) -> Any:
    """Without a calibrator: the span's probability under the model's own softmax over its window."""
    return np.exp(np.asarray(log_prob, dtype=np.float64))


def fit_calibrator(log_probs: np.ndarray, correct: np.ndarray, iterations: int = 50) -> Calibrator:
    """Platt scaling by Newton's method on the logistic log-likelihood (a tiny ridge keeps it finite
    when one feature value separates right from wrong perfectly)."""
    x = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    weights = np.array([1.0, 0.0])
    ridge = 1e-6 * len(x)
    for _ in range(iterations):
        p = _sigmoid(design @ weights)
        gradient = design.T @ (p - y) + ridge * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    return Calibrator(float(weights[0]), float(weights[1]), int(len(x)))


def fitted_on_evaluation(log_probs: np.ndarray, correct: np.ndarray) -> Calibrator | None:
    """The calibrator an evaluation's answered questions fit, or None when they are too few to trust."""
    if len(log_probs) < MIN_QUESTIONS_TO_FIT:
        return None
    return fit_calibrator(log_probs, correct)


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


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))
