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

from qa.decoding import Prediction, decode_windows
from qa.inference import gather_logits, predict_logits, shard_windows
from qa.metrics import squad_scores
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
) -> dict[str, Any] | None:
    """Answer every example, score against its gold answers and write the result files on rank 0.

    Writes ``predictions.json`` ({id: answer text}, the official SQuAD script's
    input), ``metrics.json`` and, with ``save_nbest``, ``nbest_predictions.json``.
    Returns the metrics (None on ranks other than 0).
    """
    timings = Timings()
    predictions = answer_examples(
        model, tokenizer, examples, settings, runtime, with_nbest=save_nbest, progress=progress, timings=timings
    )
    if predictions is None:
        return None
    began = time.perf_counter()
    example_ids = list(examples["id"])
    answers = {example_id: prediction.text for example_id, prediction in zip(example_ids, predictions)}
    scores = squad_scores(
        answers, {example_id: gold["text"] for example_id, gold in zip(example_ids, examples["answers"])}
    )
    timings.metric = time.perf_counter() - began
    metrics = {
        "exact_match": scores["exact_match"],
        "f1": scores["f1"],
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
        if save_nbest:
            nbest = {
                example_id: [asdict(candidate) for candidate in prediction.nbest]
                for example_id, prediction in zip(example_ids, predictions)
            }
            write_json(output_dir / "nbest_predictions.json", nbest)
        write_json(output_dir / "metrics.json", metrics)
    return metrics


def write_json(path: Path, value: Any) -> None:
    """Write JSON atomically: a crash mid-write leaves the old file, never half a new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(path)
