"""The one evaluator: windows -> batched inference -> span decoding -> SQuAD metric.

evaluate.py, train.py's evaluations, predict.py and the server all call
`answer_examples`; `score_examples` adds the metric and the result files,
`evaluate_examples` writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from qa.config.settings import DEFAULT_BATCH_TOKENS, DecodeSettings, WindowSettings
from qa.data.windows import WindowLayout, build_eval_windows, window_layout
from qa.eval.calibration import Calibrator, feature_settings, fitted_on_evaluation, prediction_confidence
from qa.eval.decoding import Prediction, decode_windows
from qa.eval.inference import gather_logits, predict_logits, shard_windows
from qa.eval.metrics import v2_raw_scores
from qa.eval.reliability import brier_score, expected_calibration_error, risk_coverage
from qa.eval.report import ReportInputs, build_report
from qa.eval.report_html import render_report, report_title
from qa.eval.scoring import ThresholdRule, score_predictions, uses_v2_rules
from qa.files import (
    EVALUATION_FILES,
    METRICS_FILE,
    NA_PROB_FILE,
    NBEST_FILE,
    PREDICTIONS_FILE,
    REPORT_FILE,
    REPORT_HTML_FILE,
    directory_lock,
    write_json,
    write_text_atomically,
)
from qa.runtime.device import Runtime


@dataclass
class AnswerSettings:
    """How examples become windows, windows become logits and logits become answers."""

    window: WindowSettings = field(default_factory=WindowSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    batch_size: int = 64  # windows per forward pass
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS  # padded tokens per forward pass
    version_2: bool = False  # SQuAD v2.0 scoring even for data without unanswerable questions
    calibrator: Calibrator | None = None  # maps span log-probabilities to calibrated scores


@dataclass
class Timings:
    """Seconds spent in each phase."""

    features: float = 0.0
    inference: float = 0.0
    decoding: float = 0.0
    metric: float = 0.0
    num_windows: int = 0


def answer_examples(
    model: Any,
    tokenizer: Any,
    examples: Any,
    settings: AnswerSettings,
    runtime: Runtime,
    *,
    with_nbest: bool = False,
    progress: bool = False,
    timings: Timings | None = None,
    layout: list[WindowLayout] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Prediction] | None:
    """Best answer (and optionally n-best list) for every example; None on ranks other than 0.

    ``examples`` is anything indexable by column name with ``id``, ``question``
    and ``context`` (a `datasets.Dataset` or a plain dict of lists). Under
    torchrun each rank infers every world_size-th window and rank 0 decodes. ``layout``: a list that
    gets the windows' `WindowLayout` (for the evaluation report).
    """
    timings = timings if timings is not None else Timings()
    began = time.perf_counter()
    windows = build_eval_windows(examples, tokenizer, settings.window, progress=progress)
    timings.features = time.perf_counter() - began
    timings.num_windows = len(windows)
    if layout is not None:
        layout.append(window_layout(windows, settings.window.max_length))

    began = time.perf_counter()
    start_flat, end_flat = predict_logits(
        model,
        windows,
        runtime,
        settings.batch_size,
        window_indices=shard_windows(len(windows), runtime),
        pad_token_id=tokenizer.pad_token_id or 0,
        progress=progress,
        max_tokens=settings.max_batch_tokens,
        on_batch=on_batch,
    )
    gathered = gather_logits(start_flat, end_flat, runtime)
    timings.inference = time.perf_counter() - began
    if gathered is None:
        return None

    began = time.perf_counter()
    predictions = decode_windows(windows, *gathered, settings.decode, with_nbest=with_nbest)
    timings.decoding = time.perf_counter() - began
    return predictions


@dataclass
class Evaluation:
    """One evaluation: its metrics and the result files that record it ({file name: JSON value})."""

    metrics: dict[str, Any]
    files: dict[str, Any]
    span_log_probs: np.ndarray = field(default_factory=lambda: np.zeros(0))  # of the answered questions
    span_correct: np.ndarray = field(default_factory=lambda: np.zeros(0))  # their exact match, 0 or 1
    # SQuAD v2 data: every question's null margin (null - best span score) and whether it has no answer
    null_margins: np.ndarray | None = None
    no_answer_right: np.ndarray | None = None
    fitted_with: dict[str, int] | None = None  # the settings a calibrator fitted here depends on
    precision: str | None = None  # of the logits (`Runtime.precision`): a calibrator fitted here records it

    def fit_calibrator(self) -> Calibrator | None:
        """The calibrator this evaluation fits (`qa.eval.calibration.fitted_on_evaluation`), or None."""
        return self.calibration()[0]

    def calibration(self) -> tuple[Calibrator | None, str | None]:
        """The calibrator this evaluation fits, or None and why it cannot."""
        return fitted_on_evaluation(
            self.span_log_probs,
            self.span_correct,
            self.null_margins,
            self.no_answer_right,
            self.fitted_with,
            self.precision,
        )


def evaluate_examples(
    model: Any,
    tokenizer: Any,
    examples: Any,
    settings: AnswerSettings,
    runtime: Runtime,
    output_dir: Path | None,
    *,
    save_nbest: bool = False,
    progress: bool = False,
    with_report: bool = True,
    about: dict[str, str] | None = None,
) -> Evaluation | None:
    """`score_examples`, then its result files written into ``output_dir`` on rank 0; returns the evaluation
    (None on other ranks). A result file of an earlier evaluation that this one does not write is removed,
    so the directory always holds one evaluation's set."""
    evaluation = score_examples(
        model,
        tokenizer,
        examples,
        settings,
        runtime,
        save_nbest=save_nbest,
        progress=progress,
        with_report=with_report,
        about=about,
    )
    if evaluation is None:
        return None
    if output_dir is not None:
        write_result_files(output_dir, evaluation.files)
    return evaluation


def score_examples(
    model: Any,
    tokenizer: Any,
    examples: Any,
    settings: AnswerSettings,
    runtime: Runtime,
    *,
    save_nbest: bool = False,
    progress: bool = False,
    tune_null_threshold: bool = False,
    with_report: bool = True,
    about: dict[str, str] | None = None,
) -> Evaluation | None:
    """Answer every example and score it against its gold answers (None on ranks other than 0).

    The files: ``predictions.json`` ({id: answer text, "" for no answer}: the official SQuAD
    scripts' input), ``metrics.json`` and, with ``save_nbest``, ``nbest_predictions.json``.
    SQuAD v2.0 scoring (``settings.version_2``, or data with unanswerable questions) adds
    ``na_prob.json`` and the F1-best null threshold; with ``tune_null_threshold`` that
    threshold is used for the predictions where it can be tuned (see `qa.eval.scoring.tuned_threshold`).
    ``with_report``: also ``report.json`` and ``report.html`` (`qa.eval.report`), headed by ``about``
    (``model`` and ``data``: what was evaluated on what).
    """
    timings, layout = Timings(), list[WindowLayout]()
    predictions = answer_examples(
        model,
        tokenizer,
        examples,
        settings,
        runtime,
        with_nbest=save_nbest,
        progress=progress,
        timings=timings,
        layout=layout,
    )
    if predictions is None:
        return None
    return score_answers(
        examples,
        predictions,
        settings,
        timings,
        layout[0],
        precision=runtime.precision,
        save_nbest=save_nbest,
        tune_null_threshold=tune_null_threshold,
        with_report=with_report,
        about=about,
    )


def score_answers(
    examples: Any,
    predictions: list[Prediction],
    settings: AnswerSettings,
    timings: Timings,
    layout: WindowLayout,
    *,
    precision: str,
    save_nbest: bool = False,
    tune_null_threshold: bool = False,
    with_report: bool = True,
    about: dict[str, str] | None = None,
) -> Evaluation:
    """The scoring half of `score_examples`, on answers already found: pure, so it can run again on the
    same answers (evaluate.py --calibrate scores them again under the calibrator it fitted). ``precision``:
    of the logits the answers came from (recorded in metrics.json and in a calibrator fitted here)."""
    began = time.perf_counter()
    example_ids = list(examples["id"])
    golds = {example_id: list(gold["text"]) for example_id, gold in zip(example_ids, examples["answers"])}
    rule = ThresholdRule(settings.decode.null_threshold, tune_null_threshold)
    version_2 = uses_v2_rules(settings.version_2, golds)
    # v2.0 scoring: each best span's F1 had the model answered (threshold search and report), computed once
    span_f1 = v2_raw_scores({i: p.text for i, p in zip(example_ids, predictions)}, golds)[1] if version_2 else None
    scores, answers, na_probs = score_predictions(example_ids, golds, predictions, rule, span_f1)
    exact, f1 = v2_raw_scores(answers, golds)  # of the answers given, per question (v1.1 data: the same rule)
    correct = np.array([exact[example_id] for example_id in example_ids], dtype=np.float64)
    threshold = scores.get("null_threshold", settings.decode.null_threshold)
    confidences = np.array([prediction_confidence(p, settings.calibrator, threshold) for p in predictions])
    curve, area = risk_coverage(confidences, correct)
    answered = np.array([not p.no_answer and p.log_prob is not None for p in predictions])
    timings.metric = time.perf_counter() - began
    metrics = {
        **scores,
        "ece": expected_calibration_error(confidences, correct),
        "brier": brier_score(confidences, correct),
        "risk_coverage_area": area,
        "calibrated": settings.calibrator is not None,
        "precision": precision,
        "num_examples": len(example_ids),
        "num_windows": timings.num_windows,
        "seconds": {
            "features": round(timings.features, 3),
            "inference": round(timings.inference, 3),
            "decoding": round(timings.decoding, 3),
            "metric": round(timings.metric, 3),
        },
        "settings": asdict(settings),
    }
    files: dict[str, Any] = {PREDICTIONS_FILE: answers, METRICS_FILE: metrics}
    if na_probs is not None:
        files[NA_PROB_FILE] = na_probs
    if save_nbest:
        files[NBEST_FILE] = {
            example_id: [asdict(candidate) for candidate in prediction.nbest]
            for example_id, prediction in zip(example_ids, predictions)
        }
    # v2 scoring: every question's null margin (null - best span score), for the report and the calibrator
    margins = np.array([_null_difference(p) for p in predictions]) if version_2 else None
    if with_report:
        inputs = ReportInputs(
            ids=example_ids,
            questions=list(examples["question"]),
            contexts=list(examples["context"]),
            gold_texts=list(golds.values()),
            gold_starts=[list(gold["answer_start"]) for gold in examples["answers"]],
            predictions=[answers[example_id] for example_id in example_ids],
            prediction_starts=[p.start for p in predictions],
            scores=confidences,
            exact=correct,
            f1=np.array([f1[example_id] for example_id in example_ids], dtype=np.float64),
            context_tokens=layout.context_tokens,
            window_spans=layout.window_spans,
            window_capacity=layout.capacity,
            version_2=version_2,
            null_differences=margins,
            span_f1=np.array([span_f1[i] for i in example_ids]) if span_f1 is not None else None,
        )
        window = settings.window
        run = {
            **(about or {}),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "precision": precision,
            "windows": f"{window.max_length} tokens, stride {window.stride}",
        }
        files[REPORT_FILE] = build_report(inputs, run)
        files[REPORT_HTML_FILE] = render_report(files[REPORT_FILE], report_title(run, len(example_ids)))
    log_probs = np.array([p.log_prob for p, kept in zip(predictions, answered) if kept], dtype=np.float64)
    evaluation = Evaluation(metrics, files, log_probs, correct[answered])
    evaluation.fitted_with = feature_settings(settings.window, settings.decode)
    evaluation.precision = precision
    if margins is not None:
        finite = np.isfinite(margins)
        no_answer = np.array([not any(golds[example_id]) for example_id in example_ids], dtype=np.float64)
        evaluation.null_margins, evaluation.no_answer_right = margins[finite], no_answer[finite]
    return evaluation


def write_result_files(output_dir: Path, results: dict[str, Any]) -> None:
    """Write one evaluation's files (metrics.json last) and remove those of an earlier one it does not replace,
    under a lock on the directory: two evaluations into one directory at once leave one whole set, never a
    mix of both."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with directory_lock(output_dir):
        for name in EVALUATION_FILES:
            if name not in results:
                (output_dir / name).unlink(missing_ok=True)
        for name in sorted(results, key=lambda name: name == METRICS_FILE):
            if name.endswith(".html"):
                write_text_atomically(output_dir / name, results[name])
            else:
                write_json(output_dir / name, results[name])


def _null_difference(prediction: Prediction) -> float:
    if prediction.score is None or prediction.null_score is None:
        return np.inf
    return prediction.null_score - prediction.score
