"""The records of a finished run meant for people: the model card (``README.md`` in the output
directory, the Hugging Face model-card format, so that an upload of the directory shows a real page)
and a picture of the training curves.

The card's metadata is built with `huggingface_hub`'s own ``ModelCardData`` / ``EvalResult``, so it is
exactly what the hub parses; matplotlib draws the curves and is optional, as on the hub itself.
"""

from __future__ import annotations

import html
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.files import CURVES_FILE, MODEL_CARD_FILE, MODEL_CARD_TAG, atomic_output, read_json_object
from qa.model.carried import CALIBRATION_KEY, NULL_THRESHOLD_KEY, Carried

HUB_DATASETS = {"squad": "SQuAD v1.1", "squad_v2": "SQuAD v2.0"}
CARD_TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.j2"


def plot_curves(output_dir: Path, log: list[dict[str, Any]]) -> bool:
    """``training_curves.png``: loss and learning rate per step, EM / F1 per evaluation. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    steps = [row for row in log if "loss" in row]
    evaluations = [row for row in log if "eval_f1" in row]
    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    loss_axes.plot([row["step"] for row in steps], [row["loss"] for row in steps], color="tab:blue", label="loss")
    loss_axes.set_xlabel("optimizer step")
    loss_axes.set_ylabel("training loss (mean of each logging interval)")
    rate_axes = loss_axes.twinx()
    rate_axes.plot([row["step"] for row in steps], [row["lr"] for row in steps], color="tab:gray", linestyle="--")
    rate_axes.set_ylabel("learning rate", color="tab:gray")
    loss_axes.set_title("training")
    for key, label in (("eval_f1", "F1"), ("eval_exact_match", "exact match"), ("eval_exact", "exact match")):
        points = [row for row in evaluations if key in row]
        if points:
            score_axes.plot([row["step"] for row in points], [row[key] for row in points], marker="o", label=label)
    score_axes.set_xlabel("optimizer step")
    score_axes.set_ylabel("validation score")
    score_axes.set_title("evaluations" if evaluations else "no evaluation during training")
    if evaluations:
        score_axes.legend()
    with atomic_output(output_dir / CURVES_FILE) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return True


@dataclass
class RunRecord:
    """What a finished run's card tells: its settings, the chosen evaluation and the history of all."""

    settings: dict[str, Any]  # training_args.json
    metrics: dict[str, Any] | None  # the final model's evaluation; None: not evaluated
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per evaluation during training
    selected_step: int | None = None  # the evaluation whose weights are the final model
    train_seconds: float = 0.0  # training time, evaluations not counted
    steps: int = 0
    epochs: float = 0.0  # passes over the training windows, as trained (the last logged epoch)
    with_curves: bool = False


def write_model_card(output_dir: Path, record: RunRecord) -> Path:
    """``README.md`` with the model-card metadata (model-index holding ``metrics``) and the run's story."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    settings, metrics = record.settings, record.metrics
    base_model = model_name(settings["model"])
    validation_data = _data_names(settings, "validation")
    hub_dataset = settings["dataset"] if not settings.get("train_file") else None
    results = []
    if metrics is not None:
        dataset_type = hub_dataset if hub_dataset and not settings.get("validation_file") else "json"
        dataset_name = HUB_DATASETS.get(dataset_type, validation_data)
        exact = metrics.get("exact_match", metrics.get("exact"))
        for metric_type, name, value in (("exact_match", "Exact Match", exact), ("f1", "F1", metrics["f1"])):
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type="question-answering",
                    task_name="Extractive Question Answering",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split="validation",
                    metric_type=metric_type,
                    metric_name=name,
                    metric_value=round(float(value), 2),
                )
            )
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="question-answering",
        base_model=base_model,
        datasets=[hub_dataset] if hub_dataset else None,
        tags=["question-answering", "squad", MODEL_CARD_TAG],
        model_name=output_dir.name,
        eval_results=results or None,
    )
    fields = _card_fields(record)
    fields["calibration"] = Carried.of(
        read_json_object(output_dir / "config.json", "the model configuration")
    ).calibration
    card = ModelCard.from_template(card_data, template_path=str(CARD_TEMPLATE), **fields)
    with atomic_output(output_dir / MODEL_CARD_FILE) as temporary:
        card.save(temporary)
    return output_dir / MODEL_CARD_FILE


def _prose(text: str) -> str:
    """A name from the user's files as text of the card: markup shown, not rendered; one line."""
    return html.escape(" ".join(text.split()), quote=False)


def model_name(model: str) -> str:
    """The model a run started from, as a card names it: a hub id as given, a local directory by its own
    name (never a path of the machine it was trained on)."""
    path = Path(model).expanduser()
    return path.resolve().name if path.exists() else model


def _data_names(settings: dict[str, Any], split: str) -> str:
    files = settings.get("train_file") if split == "train" else settings.get("validation_file")
    if files:
        return ", ".join(Path(name).name for name in (files if isinstance(files, list) else [files]))
    return f"{settings['dataset']} ({split} split, Hugging Face hub)"


def _card_fields(record: RunRecord) -> dict[str, Any]:
    """What ``templates/model_card.md.j2`` shows of a run."""
    settings, metrics = record.settings, record.metrics
    window = settings["window"]
    shown = {
        "learning rate": settings["lr"],
        "trained": f"{record.steps} steps ({record.epochs:.2f} epochs)",
        "batch size per device x accumulation": f"{settings['batch_size']} x {settings['grad_accum']}",
        "warmup ratio / weight decay": f"{settings['warmup_ratio']} / {settings['weight_decay']}",
        "max length / stride": f"{window['max_length']} / {window['stride']}",
        "precision": settings["precision"],
        "seed": settings["seed"],
    }
    # alpha and temperature mean something only with a teacher: a run without one does not list them.
    keys = ("teacher", "distill_alpha", "distill_temperature") if settings.get("teacher") else ()
    for key in (*keys, "student_layers"):
        if settings.get(key) is not None:
            shown[key.replace("_", " ")] = settings[key]
    data = _prose(_data_names(settings, "train"))
    directory = Path(settings["output_dir"]).name
    model = _prose(model_name(settings["model"]))
    return {
        "title": f"{model} fine-tuned for extractive question answering on {data}",
        "directory_literal": json.dumps(directory, ensure_ascii=False),  # a Python string literal, in the snippet
        "directory_shell": shlex.quote(directory),
        "model": model,
        "train_data": data,
        "validation_data": _prose(_data_names(settings, "validation")),
        "max_train_samples": settings.get("max_train_samples"),
        "max_eval_samples": settings.get("max_eval_samples"),
        "metrics": metrics,
        "exact": None if metrics is None else metrics.get("exact_match", metrics.get("exact")),
        "nan": float("nan"),
        "threshold": _null_threshold(metrics),
        "threshold_key": NULL_THRESHOLD_KEY,
        "calibration_key": CALIBRATION_KEY,
        "history": [
            {
                "step": row["step"],
                "selected": row["step"] == record.selected_step,
                "epoch": row["epoch"],
                "exact": row.get("exact_match", row.get("exact")),
                "f1": row["f1"],
            }
            for row in record.history
        ],
        "steps": record.steps,
        "epochs": record.epochs,
        "train_seconds": record.train_seconds,
        "settings_shown": list(shown.items()),
        "curves_file": CURVES_FILE if record.with_curves else None,
    }


def _null_threshold(metrics: dict[str, Any] | None) -> float | None:
    return None if metrics is None else metrics.get("null_threshold")
