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

from qa.eval.decoding import Candidate, Prediction


@dataclass
class PassageCandidate:
    candidate: Candidate
    passage: int
    prediction: Prediction  # the passage's own prediction (its best span and null score)


def merge_passages(
    predictions: list[Prediction], null_threshold: float | None, top_k: int
) -> tuple[list[PassageCandidate], float | None, float | None]:
    """The best ``top_k`` candidates over all passages (distinct spans, raw score order; with a threshold
    the "no answer" candidate ranks among them at null - threshold), the global null score and the
    best span score."""
    spans = [
        PassageCandidate(candidate, passage, prediction)
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
    return ranked[:top_k], null_score, best_span
