"""Where a model fails: the evaluation report (report.json), a pure function of the predictions, the
gold data and the window layout, so it is testable without a model and written by every evaluation.

Slices group the questions several ways; within a group the counts add up to the number of questions
and the count-weighted F1 is the overall F1. Calibration bins, the risk-coverage curve and the wrong
answers the model was most sure of come from the answers' scores (`qa.eval.calibration`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from qa.eval.reliability import calibration_bins, expected_calibration_error, risk_coverage

QUESTION_WORDS = ("what", "which", "who", "whom", "whose", "when", "where", "why", "how")
ANSWER_LENGTHS = (("1 word", 1, 1), ("2-3 words", 2, 3), ("4-7 words", 4, 7), ("8+ words", 8, None))
MAX_ERRORS_LISTED = 50
SNIPPET_CHARS = 80


@dataclass
class ReportInputs:
    """One row per question: what the report is computed from."""

    ids: list[str]
    questions: list[str]
    contexts: list[str]
    gold_texts: list[list[str]]
    gold_starts: list[list[int]]
    predictions: list[str]  # "" for no answer
    prediction_starts: list[int]
    scores: np.ndarray
    exact: np.ndarray  # 0 or 1 per question
    f1: np.ndarray  # 0 to 1 per question
    context_tokens: np.ndarray  # tokens of each context
    window_spans: list[list[tuple[int, int]]]  # per question: the character range of each of its windows
    window_capacity: np.ndarray | int  # per question, the context tokens one window holds (max_length - question
    # - special tokens)
    version_2: bool = False
    null_differences: np.ndarray | None = None  # v2: null score - best span score, for the threshold sweep
    span_f1: np.ndarray | None = None  # v2: F1 of the best span, had the model answered


def question_word(question: str) -> str:
    """The first of what / which / who / whom / whose / when / where / why / how that is a word of the question."""
    for word in re.findall(r"[a-z]+", question.lower()):
        if word in QUESTION_WORDS:
            return word
    return "other"


def answer_length(gold: list[str]) -> str:
    if not gold:
        return "no answer"
    words = len(gold[0].split())
    return next(name for name, low, high in ANSWER_LENGTHS if words >= low and (high is None or words <= high))


def context_length(tokens: int, capacity: int) -> str:
    """Buckets in units of the context a window holds for this question (from --max-length, not from how
    long the data's contexts are): where contexts start to split across windows."""
    for share, name in ((0.5, "up to half a window"), (1.0, "one window")):
        if tokens <= share * capacity:
            return name
    return "two windows" if tokens <= 2 * capacity else "more than two windows"


def answer_window(gold_texts: list[str], gold_starts: list[int], spans: list[tuple[int, int]]) -> str:
    """Where the (first) gold answer lies: inside the first window, only inside a later one, or across."""
    if not gold_texts:
        return "no answer"
    start, end = gold_starts[0], gold_starts[0] + len(gold_texts[0])
    inside = [low <= start and end <= high for low, high in spans]
    if inside and inside[0]:
        return "in the first window"
    return "only in a later window" if any(inside) else "across a window boundary"


def build_report(inputs: ReportInputs, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report; ``run``: what it measured (model, data, date, precision, windows), shown at its top."""
    count = len(inputs.ids)
    groups = {
        "question_word": [question_word(q) for q in inputs.questions],
        "answer_length": [answer_length(g) for g in inputs.gold_texts],
        "context_length": [
            context_length(int(t), int(c))
            for t, c in zip(inputs.context_tokens, np.broadcast_to(inputs.window_capacity, len(inputs.context_tokens)))
        ],
        "answer_window": [
            answer_window(texts, starts, spans)
            for texts, starts, spans in zip(inputs.gold_texts, inputs.gold_starts, inputs.window_spans)
        ],
    }
    if inputs.version_2:
        groups["has_answer"] = ["answerable" if g else "unanswerable" for g in inputs.gold_texts]
    report: dict[str, Any] = {
        "run": run or {},
        "overall": {
            "count": count,
            "exact_match": 100.0 * float(inputs.exact.mean()) if count else 0.0,
            "f1": 100.0 * float(inputs.f1.mean()) if count else 0.0,
        },
        "slices": {name: _slice_rows(labels, inputs) for name, labels in groups.items()},
        "calibration": {
            "bins": calibration_bins(inputs.scores, inputs.exact),
            "ece": expected_calibration_error(inputs.scores, inputs.exact),
        },
    }
    points, area = risk_coverage(inputs.scores, inputs.exact)
    report["risk_coverage"] = {"points": points, "area": area}
    report["errors"] = _confident_errors(inputs)
    if inputs.version_2 and inputs.null_differences is not None and inputs.span_f1 is not None:
        report["null_threshold_curve"] = _threshold_curve(inputs)
    return report


def _slice_rows(labels: list[str], inputs: ReportInputs) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(set(labels), key=lambda label: (-labels.count(label), label)):
        chosen = np.array([label == name for label in labels])
        rows.append(
            {
                "name": name,
                "count": int(chosen.sum()),
                "exact_match": 100.0 * float(inputs.exact[chosen].mean()),
                "f1": 100.0 * float(inputs.f1[chosen].mean()),
            }
        )
    return rows


def _snippet(context: str, start: int, end: int) -> dict[str, Any]:
    """The context around [start, end), cut at word boundaries (about SNIPPET_CHARS on each side), with
    the offsets of that span inside the snippet and whether text was cut before or after it."""
    begin, finish = max(0, start - SNIPPET_CHARS), min(len(context), end + SNIPPET_CHARS)
    if begin > 0:
        space = context.find(" ", begin, start)
        begin = space + 1 if space >= 0 else begin
    if finish < len(context):
        space = context.rfind(" ", end, finish)
        finish = space if space >= 0 else finish
    return {
        "text": context[begin:finish],
        "start": start - begin,
        "end": end - begin,
        "offset": begin,
        "cut_before": begin > 0,
        "cut_after": finish < len(context),
    }


def _confident_errors(inputs: ReportInputs) -> list[dict[str, Any]]:
    wrong = [index for index in range(len(inputs.ids)) if inputs.exact[index] == 0]
    wrong.sort(key=lambda index: -inputs.scores[index])
    rows = []
    for index in wrong[:MAX_ERRORS_LISTED]:
        context, prediction = inputs.contexts[index], inputs.predictions[index]
        row = {
            "id": inputs.ids[index],
            "question": inputs.questions[index],
            "prediction": prediction,
            "answers": inputs.gold_texts[index],
            "score": float(inputs.scores[index]),
            "f1": 100.0 * float(inputs.f1[index]),
        }
        if prediction:
            start = inputs.prediction_starts[index]
            row["prediction_context"] = _snippet(context, start, start + len(prediction))
        if inputs.gold_texts[index]:
            start = inputs.gold_starts[index][0]
            row["gold_context"] = _snippet(context, start, start + len(inputs.gold_texts[index][0]))
        rows.append(row)
    return rows


def _threshold_curve(inputs: ReportInputs, points: int = 41) -> list[dict[str, float]]:
    """SQuAD v2 F1 against the null threshold: answer a question iff null - best span <= threshold."""
    if inputs.null_differences is None or inputs.span_f1 is None:
        return []
    differences = np.asarray(inputs.null_differences, dtype=np.float64)
    finite = differences[np.isfinite(differences)]
    if not len(finite):
        return []
    has_answer = np.array([bool(g) for g in inputs.gold_texts])
    curve = []
    for threshold in np.linspace(np.percentile(finite, 1), np.percentile(finite, 99), points):
        answered = differences <= threshold
        f1 = np.where(answered, inputs.span_f1, (~has_answer).astype(np.float64))
        curve.append({"threshold": float(threshold), "f1": 100.0 * float(f1.mean())})
    return curve
