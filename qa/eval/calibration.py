"""A score that is a probability: the calibrator, and the measures of how well scores are calibrated.

An answer's raw confidence is its span's log-probability among all valid spans of its window
(`qa.eval.decoding.span_log_normalizers`): a property of the answer, not of --n-best or --top-k.
The calibrator maps it to the probability that the answer is exactly right (SQuAD exact match):
``sigmoid(slope * logit(p) + intercept)`` of the span probability p (Platt scaling on its logit, the
feature ``span_logit``), fitted by maximum likelihood on labelled questions. The logit rather than
log p, which saturates near 0 for confident spans: lower held-out ECE and Brier on both halves of the
shared dev part (bench/README.md); calibrators stored on log p (``span_log_prob``) still load. Platt
over isotonic: two numbers that store in config.json and cannot overfit a few hundred questions;
bench/calibration.py measures both.

On SQuAD v2 models "no answer" has a calibrator of its own: the probability that abstaining is right
(the question has no answer) as ``sigmoid(null_slope * margin + null_intercept)`` of the null margin
(null score - best span score, the quantity the null threshold cuts), fitted on every question of
data that holds unanswerable ones. The threshold decides whether to abstain; this says how sure.
Pure numpy: usable from a notebook on any set of scores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from qa.config.settings import DecodeSettings, WindowSettings

MIN_QUESTIONS_TO_FIT = 200  # below this the fit says more about the sample than about the model
CALIBRATION_BINS = 10
# Raw scores that differ by less than this across the fitting questions carry no ranking to keep.
RANKING_SPREAD = 1e-3
SPAN_FEATURES = ("span_logit", "span_log_prob")  # what a calibrator maps: the first is what is fitted now
_MAX_PROBABILITY = 1 - 1e-12  # keeps the logit of a span probability that rounds to 1 finite


def span_feature(log_prob: float | np.ndarray, feature: str) -> np.ndarray:
    """A span's log-probability as the feature a calibrator maps: itself, or the logit of its probability."""
    log_prob = np.asarray(log_prob, dtype=np.float64)
    if feature == "span_log_prob":
        return log_prob
    return log_prob - np.log1p(-np.minimum(np.exp(log_prob), _MAX_PROBABILITY))


@dataclass
class Calibrator:
    """Platt scaling of a span's probability (``feature``: `span_feature`); ``fitted_on``: how many
    questions it was fitted on."""

    slope: float
    intercept: float
    fitted_on: int
    feature: str = "span_logit"
    method: str = "platt"
    # SQuAD v2: Platt scaling of the null margin to P(no answer is right); None: not fitted
    null_slope: float | None = None
    null_intercept: float | None = None
    null_fitted_on: int = 0
    # The settings the fitted feature depends on (`feature_settings`): a span's probability among the
    # valid spans of its window changes with the windows and the longest answer. None: not recorded
    # (calibrators stored before it was), applied everywhere.
    fitted_with: dict[str, int] | None = None

    def fits(self, settings: dict[str, int]) -> bool:
        return self.fitted_with is None or self.fitted_with == settings

    def mismatch(self, settings: dict[str, int]) -> str:
        """The settings that differ from the ones it was fitted under, as flags (for a note)."""
        fitted = self.fitted_with or {}
        return ", ".join(
            f"--{name.replace('_', '-')} {fitted.get(name)} (now {value})"
            for name, value in settings.items()
            if fitted.get(name) != value
        )

    def confidence(self, log_prob: float | np.ndarray) -> Any:
        return _sigmoid(self.slope * span_feature(log_prob, self.feature) + self.intercept)

    @property
    def calibrates_no_answer(self) -> bool:
        return self.null_slope is not None and self.null_intercept is not None

    def no_answer_confidence(self, null_margin: float | np.ndarray) -> Any:
        if self.null_slope is None or self.null_intercept is None:
            raise ValueError("this calibrator was fitted without no-answer questions (see calibrates_no_answer)")
        return _sigmoid(self.null_slope * np.asarray(null_margin, dtype=np.float64) + self.null_intercept)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> Calibrator | None:
        """The calibrator a config.json stores, or None for a value that is not one (an unknown method)."""
        if not isinstance(value, dict) or value.get("method") != "platt" or value.get("feature") not in SPAN_FEATURES:
            return None
        try:
            slope, intercept, fitted_on = float(value["slope"]), float(value["intercept"]), int(value["fitted_on"])
            null: list[float | None] = [value.get("null_slope"), value.get("null_intercept")]
            null = [float(number) for number in null if number is not None] if None not in null else [None, None]
            null_fitted = int(value.get("null_fitted_on", 0))
            fitted_with = value.get("fitted_with")
            if fitted_with is not None:
                fitted_with = {str(name): int(number) for name, number in dict(fitted_with).items()}
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(number) for number in [slope, intercept, *(n for n in null if n is not None)]):
            return None
        return cls(
            slope,
            intercept,
            fitted_on,
            feature=value["feature"],
            null_slope=null[0],
            null_intercept=null[1],
            null_fitted_on=null_fitted,
            fitted_with=fitted_with,
        )


def feature_settings(window: WindowSettings, decode: DecodeSettings) -> dict[str, int]:
    """What a span's probability depends on besides the model: the windows and the longest answer."""
    return {
        "max_length": window.max_length,
        "stride": window.stride,
        "max_question_length": window.max_question_length,
        "max_answer_length": decode.max_answer_length,
    }


def calibration_problem(log_probs: np.ndarray, correct: np.ndarray) -> str | None:
    """Why these answers cannot fit a span calibrator (None: they can): too few, all right or all wrong
    (nothing to tell apart: the fit would be flat and every score the same)."""
    correct = np.asarray(correct, dtype=np.float64)
    if len(correct) < MIN_QUESTIONS_TO_FIT:
        return (
            f"{len(correct)} answered questions are too few to fit a calibrator on (at least {MIN_QUESTIONS_TO_FIT} "
            "questions that the model answers are needed)"
        )
    right = int(correct.sum())
    if right in (0, len(correct)):
        return (
            f"all {len(correct)} answers are {'right' if right else 'wrong'}: a calibrator needs right and wrong "
            "answers to tell apart"
        )
    return None


def span_confidence(log_prob: float | None, calibrator: Calibrator | None) -> float:
    """The confidence of a span answer: calibrated where there is a calibrator."""
    if log_prob is None:
        return 0.0
    return float(calibrator.confidence(log_prob) if calibrator is not None else uncalibrated_confidence(log_prob))


def no_answer_confidence(
    null_score: float, best_span_score: float | None, threshold: float | None, calibrator: Calibrator | None = None
) -> float:
    """The probability that "no answer" is right: the calibrator's, where it calibrates no answer; else a
    sigmoid of null score - best span score - threshold, above 0.5 exactly when the model abstains."""
    if best_span_score is None:
        return 1.0
    margin = null_score - best_span_score
    if calibrator is not None and calibrator.calibrates_no_answer:
        return float(calibrator.no_answer_confidence(margin))
    return float(_sigmoid(np.float64(margin - (threshold or 0.0))))


def candidate_confidence(
    candidate: Any, prediction: Any, calibrator: Calibrator | None, threshold: float | None
) -> float:
    """The score of one n-best candidate (`qa.eval.decoding.Candidate`) of ``prediction``."""
    if candidate.text == "" and candidate.log_prob is None and prediction.null_score is not None:
        return no_answer_confidence(prediction.null_score, prediction.score, threshold, calibrator)
    return span_confidence(candidate.log_prob, calibrator)


def prediction_confidence(prediction: Any, calibrator: Calibrator | None, threshold: float | None) -> float:
    """The score of the answer a prediction reports (its span, or "no answer" when it abstains)."""
    if prediction.no_answer:
        return no_answer_confidence(prediction.null_score, prediction.score, threshold, calibrator)
    return span_confidence(prediction.log_prob, calibrator)


def uncalibrated_confidence(log_prob: float | np.ndarray) -> Any:
    """Without a calibrator: the span's probability under the model's own softmax over its window."""
    return np.exp(np.asarray(log_prob, dtype=np.float64))


def fit_calibrator(
    log_probs: np.ndarray,
    correct: np.ndarray,
    feature: str = SPAN_FEATURES[0],
    fitted_with: dict[str, int] | None = None,
) -> Calibrator:
    """The span calibrator of these answers (their log-probabilities and exact match, 0 or 1)."""
    slope, intercept = platt_fit(span_feature(log_probs, feature), correct)
    return Calibrator(slope, intercept, int(len(correct)), feature=feature, fitted_with=fitted_with)


def ranking_problem(calibrator: Calibrator, log_probs: np.ndarray) -> str | None:
    """A fitted calibrator that would lose the ranking the raw scores have: where they differ (by more
    than noise), a slope that is not positive makes the calibrated scores all the same, or reverses
    their order. (Raw scores that are all the same have no ranking to lose: the fit is their base rate.)"""
    raw = np.exp(np.asarray(log_probs, dtype=np.float64))
    calibrated = calibrator.confidence(log_probs)
    if np.ptp(raw) > RANKING_SPREAD and (calibrator.slope <= 0 or np.ptp(calibrated) < 1e-6):
        return (
            f"the fitted slope is {calibrator.slope:.3g}: on these questions the model's span probabilities do "
            "not rank its right answers above its wrong ones"
        )
    return None


def platt_fit(values: np.ndarray, correct: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Slope and intercept of sigmoid(slope * value + intercept), by Newton's method on the logistic
    log-likelihood. The feature is centred and scaled first (a feature that barely varies would leave
    slope and intercept nearly collinear, and Newton's steps unbounded), and a tiny ridge keeps the fit
    finite when one value separates right from wrong."""
    x = np.asarray(values, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    centre, spread = float(x.mean()), float(x.std())
    spread = spread if spread > 1e-12 else 1.0
    design = np.stack([(x - centre) / spread, np.ones_like(x)], axis=1)
    weights = np.zeros(2)
    ridge = 1e-6 * len(x)
    for _ in range(iterations):
        p = _sigmoid(design @ weights)
        gradient = design.T @ (p - y) + ridge * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    slope = weights[0] / spread
    return float(slope), float(weights[1] - slope * centre)


def with_no_answer_fit(calibrator: Calibrator, null_margins: np.ndarray, no_answer_right: np.ndarray) -> Calibrator:
    """``calibrator`` with its no-answer part fitted on these questions' null margins (label: the
    question has no answer), or without one when they are too few or all of one kind."""
    labels = np.asarray(no_answer_right, dtype=np.float64)
    if no_answer_problem(labels) is not None:
        return calibrator
    slope, intercept = platt_fit(null_margins, labels)
    if np.ptp(null_margins) > RANKING_SPREAD and slope <= 0:  # a larger margin must make "no answer" likelier
        return calibrator
    return replace(calibrator, null_slope=slope, null_intercept=intercept, null_fitted_on=len(labels))


def no_answer_problem(no_answer_right: np.ndarray) -> str | None:
    """Why these questions cannot fit the no-answer calibrator (None: they can)."""
    labels = np.asarray(no_answer_right, dtype=np.float64)
    without = int(labels.sum())
    if len(labels) < MIN_QUESTIONS_TO_FIT or without in (0, len(labels)):
        return (
            f"{len(labels)} questions ({len(labels) - without} with an answer, {without} without): at least "
            f"{MIN_QUESTIONS_TO_FIT} questions in all, some with and some without an answer, are needed"
        )
    return None


def fitted_on_evaluation(
    log_probs: np.ndarray,
    correct: np.ndarray,
    null_margins: np.ndarray | None = None,
    no_answer_right: np.ndarray | None = None,
    fitted_with: dict[str, int] | None = None,
) -> tuple[Calibrator | None, str | None]:
    """The calibrator an evaluation fits, on its answered questions and, for data with unanswerable
    questions, on every question's null margin too; or None and the reason it cannot be fitted."""
    problem = calibration_problem(log_probs, correct)
    if problem is not None:
        return None, problem
    calibrator = fit_calibrator(log_probs, correct, fitted_with=fitted_with)
    problem = ranking_problem(calibrator, log_probs)
    if problem is not None:
        return None, problem
    if null_margins is not None and no_answer_right is not None:
        calibrator = with_no_answer_fit(calibrator, null_margins, no_answer_right)
    return calibrator, None


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


def _sigmoid(z: np.ndarray | np.floating) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))
