"""One answer across several passages: every passage is read as its own context (windows, logits and
n-best list, all in the one batched pass of the evaluator), then the spans of all passages are ranked
together and one "no answer" decides for the question.

Ranking across passages uses the raw span score (start + end logit): a score normalised within one
passage or window (the n-best softmax, the span log-probability) says how a span compares with the
others of its own passage, not whether that passage holds the answer at all (bench/README.md measures
the rules). "No answer" takes the smallest null score of all windows of all passages, as the official
v2 decoding does for the windows of one context: the passage most sure that there is an answer decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qa.eval.decoding import Candidate, Prediction


@dataclass
class PassageCandidate:
    candidate: Candidate
    passage: int
    prediction: Prediction  # the passage's own prediction (its best span and null score)
    # the span's log-probability among the spans (and null spans) of all passages: raw score order
    log_prob: float | None = None


def merge_passages(
    predictions: list[Prediction], null_threshold: float | None, top_k: int | None
) -> tuple[list[PassageCandidate], float | None, float | None]:
    """The best ``top_k`` (None: all) candidates over all passages (distinct spans, raw score order; with
    a threshold the "no answer" candidate ranks among them at null - threshold), the global null score
    and the best span score. A span's ``log_prob`` is renormalised over all passages (each passage's
    normalizer is its spans' score minus log-probability), so its score follows the raw order."""
    normalizers = [
        next((c.score - c.log_prob for c in prediction.nbest if c.log_prob is not None), None)
        for prediction in predictions
    ]
    known = [normalizer for normalizer in normalizers if normalizer is not None]
    total = float(np.logaddexp.reduce(known)) if known else None
    spans = [
        PassageCandidate(candidate, passage, prediction, candidate.score - total if total is not None else None)
        for passage, prediction in enumerate(predictions)
        for candidate in prediction.nbest
        if candidate.log_prob is not None
    ]
    spans.sort(key=lambda item: -item.candidate.score)
    nulls = [p.null_score for p in predictions if p.null_score is not None]
    null_score = min(nulls) if nulls and len(nulls) == len(predictions) else None
    best_span = max((p.score for p in predictions if p.score is not None), default=None)
    ranked = spans
    if null_threshold is not None and null_score is not None:
        empty = Candidate(text="", start=0, end=0, score=null_score - null_threshold)
        merged = Prediction(text="", start=0, end=0, score=best_span, null_score=null_score)
        null_item = PassageCandidate(empty, -1, merged)
        ranked = sorted([*spans, null_item], key=lambda item: -item.candidate.score)  # stable: spans first
    return (ranked if top_k is None else ranked[:top_k]), null_score, best_span
