"""The JSON shape of answers, the one way predict.py, the server and streamed batches give them:
answer, score, start, end (and passage, no_answer, withheld where they apply), ranked, cut to top_k
after selective answering."""

from __future__ import annotations

from typing import Any

from qa.data.questions import Question
from qa.eval.calibration import Calibrator, candidate_confidence, exclusive_scores, span_confidence
from qa.eval.decoding import Prediction
from qa.eval.passages import merge_passages


def answers_json(
    prediction: Prediction,
    top_k: int,
    with_null: bool = False,
    calibrator: Calibrator | None = None,
    null_threshold: float | None = None,
    min_confidence: float | None = None,
) -> list[dict[str, Any]]:
    """The best ``top_k`` answers of one prediction as JSON objects: answer, score, start, end.

    ``start`` / ``end`` are character offsets (code points) into the context. ``score`` is the
    answer's confidence (`qa.eval.calibration`): with a calibrator, the probability that it is exactly
    right; for the "no answer" candidate of a model with a null threshold, the probability that no
    answer is right. The answers exclude one another, so their scores sum to at most 1
    (`qa.eval.calibration.exclusive_scores`) and come in the order shown. With ``with_null`` every
    object says whether it is that candidate. With ``min_confidence``: `select_answers`.
    """
    if not prediction.nbest:
        # No span to answer with (a context the tokenizer reads as empty): said, never a silent "".
        answers = [{"answer": "", "score": 0.0, "start": 0, "end": 0, "no_answer": True}]
    else:
        scores = exclusive_scores(
            [candidate_confidence(candidate, prediction, calibrator, null_threshold) for candidate in prediction.nbest]
        )
        answers = [
            {"answer": candidate.text, "score": round(score, 6), "start": candidate.start, "end": candidate.end}
            for candidate, score in zip(prediction.nbest, scores)
        ]
    if with_null:
        for answer in answers:
            answer["no_answer"] = answer["answer"] == ""
    return select_answers(answers, top_k, min_confidence)


def passage_answers_json(
    predictions: list[Prediction],
    top_k: int,
    with_null: bool = False,
    calibrator: Calibrator | None = None,
    null_threshold: float | None = None,
    min_confidence: float | None = None,
) -> list[dict[str, Any]]:
    """The best ``top_k`` answers across the passages of one question (`qa.eval.passages`), each with
    ``passage``, the index of its passage, and ``start`` / ``end`` into that passage."""
    ranked, _, _ = merge_passages(predictions, null_threshold, None)
    scores = exclusive_scores(
        [
            span_confidence(item.log_prob, calibrator)
            if item.passage >= 0
            else candidate_confidence(item.candidate, item.prediction, calibrator, null_threshold)
            for item in ranked
        ]
    )
    answers = []
    for item, score in zip(ranked, scores):
        answer = {
            "answer": item.candidate.text,
            "score": round(score, 6),
            "start": item.candidate.start,
            "end": item.candidate.end,
            "passage": item.passage if item.passage >= 0 else None,
        }
        if with_null:
            answer["no_answer"] = item.passage < 0
        answers.append(answer)
    answers = answers or [{"answer": "", "score": 0.0, "start": 0, "end": 0, "passage": None}]
    return select_answers(answers, top_k, min_confidence)


def select_answers(answers: list[dict[str, Any]], top_k: int, min_confidence: float | None) -> list[dict[str, Any]]:
    """The first ``top_k`` of the ranked ``answers``; with ``min_confidence`` (selective answering) spans
    scored below it are dropped first, so the first answer is the same whatever ``top_k`` is. When no
    answer is left, one withheld "no answer" comes back (``"withheld": true``) with the best answer's
    score, told apart from a model's own abstention. Every answer then says whether it is "no answer"."""
    if min_confidence is None:
        return answers[:top_k]
    for answer in answers:
        answer["no_answer"] = answer["answer"] == ""
    kept = [answer for answer in answers if answer["no_answer"] or answer["score"] >= min_confidence]
    if not kept:
        withheld = {"answer": "", "score": answers[0]["score"], "start": 0, "end": 0, "no_answer": True}
        if "passage" in answers[0]:
            withheld["passage"] = None
        kept = [{**withheld, "withheld": True}]
    return kept[:top_k]


def shape_answers(answers: list[dict[str, Any]], question: Question) -> dict[str, Any] | list[dict[str, Any]]:
    """One question's answers as predict.py --input and the server return them: the best answer's
    object when one was asked for, else the list; with the asker's id, ``{"id", ...}`` or
    ``{"id", "answers": [...]}``."""
    if question.id is None:
        return answers[0] if question.top_k == 1 else answers
    if question.top_k == 1:
        return {"id": question.id, **answers[0]}
    return {"id": question.id, "answers": answers}
