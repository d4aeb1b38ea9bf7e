"""The names of the files the commands write, the keys they store in a model's config.json,
and plain JSON reading and writing of them. Imports no torch, so ``--help`` and flag
parsing can read a checkpoint's training arguments cheaply."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qa.errors import QAError

# A training run's output directory
DEFAULT_OUTPUT_DIR = "finetuned-squad"  # train.py's --output-dir, evaluate.py's and predict.py's --ckpt
TRAINING_ARGS_FILE = "training_args.json"
STATE_FILE = "training_state.pt"
LOG_FILE = "train_log.jsonl"
LOCK_FILE = ".train.lock"
CHECKPOINT_PREFIX = "checkpoint-"
MODEL_CARD_FILE = "README.md"  # the Hugging Face model card
MODEL_CARD_TAG = "generated_by_squad_qa"  # in our cards' tags: tells our card from a README.md of the user's
CURVES_FILE = "training_curves.png"
TENSORBOARD_DIR = "runs"
MLFLOW_RUN_FILE = "mlflow_run.json"  # the MLflow run a resumed run continues

# One evaluation's result files (train.py's evaluations and evaluate.py write the same set)
PREDICTIONS_FILE = "predictions.json"  # {id: answer}, the input of the official SQuAD scripts
METRICS_FILE = "metrics.json"
NA_PROB_FILE = "na_prob.json"  # SQuAD v2: the official script's --na-prob-file
NBEST_FILE = "nbest_predictions.json"
REPORT_FILE = "report.json"  # where the model fails: slices, calibration, confident errors
REPORT_HTML_FILE = "report.html"  # the same as one self-contained page
EVALUATION_FILES = (PREDICTIONS_FILE, METRICS_FILE, NA_PROB_FILE, NBEST_FILE, REPORT_FILE, REPORT_HTML_FILE)


def read_training_args(checkpoint: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The training arguments train.py recorded beside a model, or {} for other models."""
    if checkpoint is None:
        return {}
    path = Path(checkpoint) / TRAINING_ARGS_FILE
    if not path.is_file():
        return {}
    return read_json_object(path, "the training arguments")


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, RecursionError) as error:
        raise QAError(f"{path}: cannot read {what} ({error})") from None
    if not isinstance(value, dict):
        raise QAError(f"{path}: expected a JSON object")
    return value


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the new file to, moved onto ``path`` when the block
    ends and removed when it fails: a crash mid-write leaves the old file, never half a new one.
    The name is this writer's own (``.NAME.PID.RANDOM.tmp``): two processes replacing one file never
    write into the same temporary; train.py clears such names as leftovers of a killed run."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (flock on the directory itself: no lock file is left in
    a model directory) for a read-modify-write of a file in it, so that another process's change
    between the read and the write is not lost. The OS drops it if the holder dies."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def json_text(value: Any, **options: Any) -> str:
    """Indented JSON, non-ASCII text kept readable, with a final newline."""
    return json.dumps(value, indent=2, ensure_ascii=False, **options) + "\n"


# JSON may hold these raw, but str.splitlines() (and so many JSON Lines readers) splits lines at them.
_LINE_BREAKS_TO_ESCAPE = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"})


def json_line(value: Any) -> str:
    """One JSON Lines record: readable UTF-8, with the line separators that ``str.splitlines`` splits at
    escaped, so that every reader sees one line per record."""
    return json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS_TO_ESCAPE)


def write_json(path: Path, value: Any, **options: Any) -> None:
    """Write JSON atomically (see `atomic_output`)."""
    write_text_atomically(path, json_text(value, **options))
