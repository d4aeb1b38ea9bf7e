"""A score that is a probability: the calibrator (how well scores are calibrated: `qa.eval.reliability`).

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

A fitted line says nothing beyond its data, so a calibrator never follows it there (`Support`): the
feature is held to the range seen when fitting, and the score to what the data's extremes show, the
95% Wilson interval of the accuracy among the least and the most confident twentieth of the fitting
questions (docs/design.md measures the rule). A model that is right 4% of the time cannot be made to
say 99%. And answers to one question exclude one another: `exclusive_scores` keeps their sum at most 1.
Pure numpy: usable from a notebook on any set of scores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from qa.config.settings import DecodeSettings, WindowSettings

MIN_QUESTIONS_TO_FIT = 200  # below this the fit says more about the sample than about the model
# "No answer" is fitted only on data with at least this many questions of each kind (with and without an
# answer): the same minimum as the null threshold's (`qa.eval.scoring.MIN_QUESTIONS_OF_EACH_KIND`).
MIN_NO_ANSWER_OF_EACH_KIND = 25
# The tails whose accuracy bounds a calibrated score: a twentieth of the fitting questions, at least this many
# (a tenth or a fifth held the scores of a well-fitted model too tightly: bench/README.md).
SUPPORT_TAIL_SHARE = 0.05
SUPPORT_TAIL_MIN = 20
WILSON_Z = 1.96  # a 95% interval
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


@dataclass(frozen=True)
class Support:
    """What a fit's data shows: the range of the feature it saw and the interval its calibrated scores are
    held to (the Wilson bounds of the accuracy of its least and most confident tails)."""

    low_feature: float
    high_feature: float
    low_score: float
    high_score: float

    def bound(self, slope: float, intercept: float, feature: np.ndarray) -> np.ndarray:
        held = np.clip(feature, self.low_feature, self.high_feature)
        return np.clip(_sigmoid(slope * held + intercept), self.low_score, self.high_score)

    def to_list(self) -> list[float]:
        return [self.low_feature, self.high_feature, self.low_score, self.high_score]

    @classmethod
    def from_list(cls, value: Any) -> Support:
        """Raises ValueError / TypeError for a value that is not four ordered finite numbers in range."""
        numbers = [float(number) for number in value]
        if len(numbers) != 4 or not all(math.isfinite(number) for number in numbers):
            raise ValueError("support: four finite numbers")
        support = cls(*numbers)
        if support.low_feature > support.high_feature or not 0 <= support.low_score <= support.high_score <= 1:
            raise ValueError("support: ranges out of order")
        return support


def fit_support(features: np.ndarray, labels: np.ndarray) -> Support:
    """The support of a fit on these features and 0/1 labels (`Support`)."""
    features, labels = np.asarray(features, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    order = np.argsort(features, kind="stable")
    tail = min(len(labels), max(SUPPORT_TAIL_MIN, int(SUPPORT_TAIL_SHARE * len(labels))))
    least, most = labels[order[:tail]], labels[order[-tail:]]
    return Support(
        float(features.min()),
        float(features.max()),
        wilson_interval(int(least.sum()), tail)[0],
        wilson_interval(int(most.sum()), tail)[1],
    )


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (sound at 0 and 1 successes, unlike the normal one)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Calibrator:
    """Platt scaling of a span's probability (``feature``: `span_feature`), held to its ``support``;
    ``fitted_on``: how many questions it was fitted on."""

    slope: float
    intercept: float
    fitted_on: int
    support: Support
    feature: str = "span_logit"
    method: str = "platt"
    # SQuAD v2: Platt scaling of the null margin to P(no answer is right); None: not fitted
    null_slope: float | None = None
    null_intercept: float | None = None
    null_fitted_on: int = 0
    null_support: Support | None = None
    # The precision of the logits it was fitted on (`qa.runtime.device.Runtime.precision`); inference under
    # another says so (bf16 and fp32 logits differ a little).
    precision: str | None = None
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
        return self.support.bound(self.slope, self.intercept, span_feature(log_prob, self.feature))

    @property
    def calibrates_no_answer(self) -> bool:
        return self.null_slope is not None and self.null_intercept is not None and self.null_support is not None

    def no_answer_confidence(self, null_margin: float | np.ndarray) -> Any:
        if self.null_slope is None or self.null_intercept is None or self.null_support is None:
            raise ValueError("this calibrator was fitted without no-answer questions (see calibrates_no_answer)")
        return self.null_support.bound(self.null_slope, self.null_intercept, np.asarray(null_margin, dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["support"] = self.support.to_list()
        values["null_support"] = self.null_support.to_list() if self.null_support is not None else None
        return values

    @classmethod
    def from_dict(cls, value: Any) -> Calibrator | None:
        """The calibrator a config.json stores, or None for a value that is not one: an unknown method, a
        wrong type, a number that is not finite, or one stored without its support (before calibrators
        were held to their data: such a one would extrapolate, so it is not applied)."""
        if not isinstance(value, dict) or value.get("method") != "platt" or value.get("feature") not in SPAN_FEATURES:
            return None
        try:
            slope, intercept, fitted_on = float(value["slope"]), float(value["intercept"]), int(value["fitted_on"])
            support = Support.from_list(value["support"])
            null: list[float | None] = [value.get("null_slope"), value.get("null_intercept")]
            null = [float(number) for number in null if number is not None] if None not in null else [None, None]
            null_support = Support.from_list(value["null_support"]) if null[0] is not None else None
            null_fitted = int(value.get("null_fitted_on", 0))
            fitted_with = value.get("fitted_with")
            if fitted_with is not None:
                fitted_with = {str(name): int(number) for name, number in dict(fitted_with).items()}
            precision = value.get("precision")
            if precision is not None and not isinstance(precision, str):
                return None
        except (KeyError, TypeError, ValueError):
            return None
        if not all(math.isfinite(number) for number in [slope, intercept, *(n for n in null if n is not None)]):
            return None
        return cls(
            slope,
            intercept,
            fitted_on,
            support,
            feature=value["feature"],
            null_slope=null[0],
            null_intercept=null[1],
            null_fitted_on=null_fitted,
            null_support=null_support,
            fitted_with=fitted_with,
            precision=precision,
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
    precision: str | None = None,
) -> Calibrator:
    """The span calibrator of these answers (their log-probabilities and exact match, 0 or 1)."""
    values = span_feature(log_probs, feature)
    slope, intercept = platt_fit(values, correct)
    support = fit_support(values, correct)
    return Calibrator(
        slope, intercept, int(len(correct)), support, feature=feature, fitted_with=fitted_with, precision=precision
    )


def exclusive_scores(scores: list[float]) -> list[float]:
    """The scores of one question's ranked answers (its "no answer" among them) made exclusive: at most
    one of them is exactly right, so they sum to at most 1. Each was calibrated as if it were the only
    answer; the first keeps its score (the one the calibrator was fitted on), the others share what it
    leaves, scaled down together where they would take more, and none shows more than the one before it
    (a list is read from the top)."""
    if not scores:
        return []
    first, rest = scores[0], scores[1:]
    room = max(0.0, 1.0 - first)
    scale = min(1.0, room / sum(rest)) if sum(rest) > 0 else 1.0
    shown = [first]
    for score in rest:
        shown.append(min(score * scale, shown[-1]))
    return shown


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
    return replace(
        calibrator,
        null_slope=slope,
        null_intercept=intercept,
        null_fitted_on=len(labels),
        null_support=fit_support(null_margins, labels),
    )


def no_answer_problem(no_answer_right: np.ndarray) -> str | None:
    """Why these questions cannot fit the no-answer calibrator (None: they can)."""
    labels = np.asarray(no_answer_right, dtype=np.float64)
    without = int(labels.sum())
    fewest = min(without, len(labels) - without)
    if len(labels) < MIN_QUESTIONS_TO_FIT or fewest < MIN_NO_ANSWER_OF_EACH_KIND:
        return (
            f"{len(labels)} questions ({len(labels) - without} with an answer, {without} without): at least "
            f"{MIN_QUESTIONS_TO_FIT} questions in all, {MIN_NO_ANSWER_OF_EACH_KIND} of each kind, are needed"
        )
    return None


def fitted_on_evaluation(
    log_probs: np.ndarray,
    correct: np.ndarray,
    null_margins: np.ndarray | None = None,
    no_answer_right: np.ndarray | None = None,
    fitted_with: dict[str, int] | None = None,
    precision: str | None = None,
) -> tuple[Calibrator | None, str | None]:
    """The calibrator an evaluation fits, on its answered questions and, for data with unanswerable
    questions, on every question's null margin too; or None and the reason it cannot be fitted."""
    problem = calibration_problem(log_probs, correct)
    if problem is not None:
        return None, problem
    calibrator = fit_calibrator(log_probs, correct, fitted_with=fitted_with, precision=precision)
    problem = ranking_problem(calibrator, log_probs)
    if problem is not None:
        return None, problem
    if null_margins is not None and no_answer_right is not None:
        calibrator = with_no_answer_fit(calibrator, null_margins, no_answer_right)
    return calibrator, None


def _sigmoid(z: np.ndarray | np.floating) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -z))
