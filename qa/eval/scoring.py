"""Scoring answers against gold data: pure functions over predictions, no model and no torch.

SQuAD v1.1 data is scored by the v1.1 rules; data with unanswerable questions (or v2 asked for)
by the v2.0 rules, with the F1-best null threshold, the no-answer decisions it makes and the
official script's no-answer probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from qa.eval.decoding import Prediction, decide_no_answer
from qa.eval.metrics import best_null_threshold, squad_scores, squad_v2_scores

# A tuned null threshold needs at least this many validation questions with an answer and as many without:
# the F1-best cut on fewer is the sample's, not the model's (one unanswerable question decides it alone).
# SQuAD v2's dev set has thousands of each; docs/design.md says why 25.
MIN_QUESTIONS_OF_EACH_KIND = 25


@dataclass
class ThresholdRule:
    """Which null threshold decides the v2 answers: the one given (None: always answer) or, with
    ``tune``, the F1-best one where the data can tune it (`tuned_threshold`)."""

    given: float | None = None
    tune: bool = False


def uses_v2_rules(version_2: bool, golds: dict[str, list[str]]) -> bool:
    """SQuAD v2.0 scoring: asked for, or data that holds an unanswerable question."""
    return version_2 or not all(golds.values())


def score_predictions(
    example_ids: list[str],
    golds: dict[str, list[str]],
    predictions: list[Prediction],
    rule: ThresholdRule,
    span_f1: dict[str, float] | None,
) -> tuple[dict[str, Any], dict[str, str], dict[str, float] | None]:
    """(metrics, {id: answer}, {id: no-answer probability} or None for v1.1 scoring); sets each
    prediction's no-answer decision under v2.0 scoring. ``span_f1``: v2.0 scoring, with each question's
    F1 of its best span had the model answered (`uses_v2_rules`); None: v1.1 scoring."""
    if span_f1 is None:
        answers = {example_id: prediction.answer for example_id, prediction in zip(example_ids, predictions)}
        return squad_scores(answers, golds), answers, None
    return _score_v2(example_ids, golds, predictions, rule, span_f1)


def tuned_threshold(best_threshold: float, num_answerable: int, num_unanswerable: int) -> float | None:
    """The threshold to store after tuning: the F1-best one, when the validation data holds at least
    `MIN_QUESTIONS_OF_EACH_KIND` answerable and as many unanswerable questions; else none (the model
    always answers). With one kind only the F1-best threshold is degenerate (it answers everything, or
    nothing at all); with a few of one kind it is those few questions' own."""
    if min(num_answerable, num_unanswerable) >= MIN_QUESTIONS_OF_EACH_KIND:
        return best_threshold
    return None


def _score_v2(
    example_ids: list[str],
    golds: dict[str, list[str]],
    predictions: list[Prediction],
    rule: ThresholdRule,
    span_f1: dict[str, float],
) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """The official v2.0 metrics, the F1-best null threshold, the answers and no-answer probabilities."""
    differences = np.array(
        [p.null_score - p.score if p.score is not None and p.null_score is not None else np.inf for p in predictions],
        dtype=np.float64,
    )
    has_answer = [bool(golds[i]) for i in example_ids]
    best_threshold, best_f1 = best_null_threshold(differences, [span_f1[i] for i in example_ids], has_answer)
    if rule.tune:
        answerable = sum(has_answer)
        threshold = tuned_threshold(best_threshold, answerable, len(has_answer) - answerable)
    else:
        threshold = rule.given
    for prediction in predictions:
        prediction.no_answer = decide_no_answer(prediction, threshold)
    answers = {example_id: p.answer for example_id, p in zip(example_ids, predictions)}
    probabilities = no_answer_probabilities(differences, threshold, np.array([p.answer == "" for p in predictions]))
    na_probs = {example_id: float(p) for example_id, p in zip(example_ids, probabilities)}
    scores: dict[str, Any] = squad_v2_scores(answers, golds, na_probs)
    # v1.1's key too, so that one name reads exact match from every metrics.json (the official v2 script's
    # `exact` stays beside it)
    scores["exact_match"] = scores["exact"]
    scores.update(null_threshold=threshold, best_null_threshold=best_threshold, best_null_threshold_f1=best_f1)
    return scores, answers, na_probs


def no_answer_probabilities(differences: np.ndarray, threshold: float | None, unanswered: np.ndarray) -> np.ndarray:
    """The official script's --na-prob-file: rising with null score - best span score, and above 0.5
    exactly for the questions left unanswered. A model without a threshold answers every question
    it finds a span for, so its probabilities stay below 0.5 (in the same order) except there."""
    with np.errstate(over="ignore", invalid="ignore"):
        if threshold is None:
            probabilities = 0.5 * np.exp(-np.logaddexp(0.0, -differences))  # half a sigmoid: below 0.5
        else:
            probabilities = np.exp(-np.logaddexp(0.0, -(differences - threshold)))  # a sigmoid that never overflows
    above_half = np.nextafter(0.5, 1.0)
    return np.where(unanswered, np.maximum(probabilities, above_half), np.minimum(probabilities, 0.5))


def summary_line(metrics: dict[str, Any]) -> str:
    """EM / F1 in one line: v1.1 keys, or the v2.0 keys with the null threshold."""
    if "best_null_threshold" not in metrics:
        return f"exact_match = {metrics['exact_match']:.2f}  f1 = {metrics['f1']:.2f}"
    parts = [f"exact = {metrics['exact']:.2f}  f1 = {metrics['f1']:.2f}"]
    for prefix in ("HasAns", "NoAns"):
        if f"{prefix}_f1" in metrics:
            parts.append(f"{prefix}_f1 = {metrics[prefix + '_f1']:.2f}")
    threshold = metrics["null_threshold"]
    parts.append(f"null threshold {'none (always answers)' if threshold is None else f'{threshold:.4f}'}")
    parts.append(f"best: f1 {metrics['best_null_threshold_f1']:.2f} at {metrics['best_null_threshold']:.4f}")
    return "  ".join(parts)
