"""The one evaluator: windows -> batched inference -> span decoding -> SQuAD metric.

evaluate.py, train.py's evaluation after training and predict.py all call
`answer_examples`; `evaluate_examples` adds the metric and the output files.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qa.decoding import Prediction, decide_no_answer, decode_windows
from qa.inference import gather_logits, predict_logits, shard_windows
from qa.metrics import best_null_threshold, squad_scores, squad_v2_scores, v2_raw_scores
from qa.runtime import Runtime
from qa.settings import DecodeSettings, WindowSettings
from qa.windows import build_eval_windows


@dataclass
class AnswerSettings:
    """How examples become windows, windows become logits and logits become answers."""

    window: WindowSettings = field(default_factory=WindowSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    batch_size: int = 64  # windows per forward pass


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
) -> list[Prediction] | None:
    """Best answer (and optionally n-best list) for every example; None on ranks other than 0.

    ``examples`` is anything indexable by column name with ``id``, ``question``
    and ``context`` (a `datasets.Dataset` or a plain dict of lists). Under
    torchrun each rank infers every world_size-th window and rank 0 decodes.
    """
    timings = timings if timings is not None else Timings()
    began = time.perf_counter()
    windows = build_eval_windows(examples, tokenizer, settings.window, progress=progress)
    timings.features = time.perf_counter() - began
    timings.num_windows = len(windows)

    began = time.perf_counter()
    start_flat, end_flat = predict_logits(
        model,
        windows,
        runtime,
        settings.batch_size,
        window_indices=shard_windows(len(windows), runtime),
        pad_token_id=tokenizer.pad_token_id or 0,
        progress=progress,
    )
    gathered = gather_logits(start_flat, end_flat, runtime)
    timings.inference = time.perf_counter() - began
    if gathered is None:
        return None

    began = time.perf_counter()
    predictions = decode_windows(windows, *gathered, settings.decode, with_nbest=with_nbest)
    timings.decoding = time.perf_counter() - began
    return predictions


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
    tune_null_threshold: bool = False,
) -> dict[str, Any] | None:
    """Answer every example, score against its gold answers and write the result files on rank 0.

    Writes ``predictions.json`` ({id: answer text, "" for no answer}: the official
    SQuAD scripts' input), ``metrics.json`` and, with ``save_nbest``,
    ``nbest_predictions.json``. Data with unanswerable questions (SQuAD v2.0) is
    scored with the official v2.0 metric and also gets ``na_prob.json``; the
    null threshold that maximises F1 is reported, and with ``tune_null_threshold``
    used for the predictions. Returns the metrics (None on ranks other than 0).
    """
    timings = Timings()
    predictions = answer_examples(
        model, tokenizer, examples, settings, runtime, with_nbest=save_nbest, progress=progress, timings=timings
    )
    if predictions is None:
        return None
    began = time.perf_counter()
    example_ids = list(examples["id"])
    golds = {example_id: list(gold["text"]) for example_id, gold in zip(example_ids, examples["answers"])}
    na_probs = None
    if all(golds.values()):
        answers = {example_id: prediction.answer for example_id, prediction in zip(example_ids, predictions)}
        scores: dict[str, Any] = squad_scores(answers, golds)
    else:
        scores, answers, na_probs = _score_v2(example_ids, golds, predictions, settings, tune_null_threshold)
    timings.metric = time.perf_counter() - began
    metrics = {
        **scores,
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
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / "predictions.json", answers)
        if na_probs is not None:
            write_json(output_dir / "na_prob.json", na_probs)
        if save_nbest:
            nbest = {
                example_id: [asdict(candidate) for candidate in prediction.nbest]
                for example_id, prediction in zip(example_ids, predictions)
            }
            write_json(output_dir / "nbest_predictions.json", nbest)
        write_json(output_dir / "metrics.json", metrics)
    return metrics


def _score_v2(
    example_ids: list[str],
    golds: dict[str, list[str]],
    predictions: list[Prediction],
    settings: AnswerSettings,
    tune: bool,
) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """The official v2.0 metrics, the F1-best null threshold, the answers and no-answer probabilities."""
    differences = np.array(
        [p.null_score - p.score if p.score is not None else np.inf for p in predictions], dtype=np.float64
    )
    _, span_f1 = v2_raw_scores({example_id: p.text for example_id, p in zip(example_ids, predictions)}, golds)
    best_threshold, best_f1 = best_null_threshold(
        differences, [span_f1[i] for i in example_ids], [bool(golds[i]) for i in example_ids]
    )
    threshold = best_threshold if tune else settings.decode.null_threshold
    for prediction in predictions:
        prediction.no_answer = decide_no_answer(prediction, threshold)
    answers = {example_id: p.answer for example_id, p in zip(example_ids, predictions)}
    # The official script's --na-prob-file: a monotone function of null - best span score that
    # crosses 0.5 exactly at the threshold in use.
    probabilities = np.exp(-np.logaddexp(0.0, -(differences - (threshold or 0.0))))  # a sigmoid that never overflows
    na_probs = {example_id: float(p) for example_id, p in zip(example_ids, probabilities)}
    scores = squad_v2_scores(answers, golds, na_probs)
    scores.update(null_threshold=threshold, best_null_threshold=best_threshold, best_null_threshold_f1=best_f1)
    return scores, answers, na_probs


def summary_line(metrics: dict[str, Any]) -> str:
    """EM / F1 in one line: v1.1 keys, or the v2.0 keys with the null threshold."""
    if "exact_match" in metrics:
        return f"exact_match = {metrics['exact_match']:.2f}  f1 = {metrics['f1']:.2f}"
    parts = [f"exact = {metrics['exact']:.2f}  f1 = {metrics['f1']:.2f}"]
    for prefix in ("HasAns", "NoAns"):
        if f"{prefix}_f1" in metrics:
            parts.append(f"{prefix}_f1 = {metrics[prefix + '_f1']:.2f}")
    threshold = metrics["null_threshold"]
    parts.append(f"null threshold {'none (always answers)' if threshold is None else f'{threshold:.4f}'}")
    parts.append(f"best: f1 {metrics['best_null_threshold_f1']:.2f} at {metrics['best_null_threshold']:.4f}")
    return "  ".join(parts)


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically: a crash mid-write leaves the old file, never half a new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)
