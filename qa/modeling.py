"""Loading question-answering models and their tokenizers, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qa.errors import QAError

TRAINING_ARGS_FILE = "training_args.json"


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise QAError(_load_problem(name_or_path, "tokenizer", error)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise QAError(f"{name_or_path}: the tokenizer must be a fast (Rust) tokenizer, which gives character offsets")
    return tokenizer


def load_qa_model(name_or_path: str, *, require_qa_head: bool) -> Any:
    """An `AutoModelForQuestionAnswering`; with ``require_qa_head`` the checkpoint must already be a QA model."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering
    from transformers.utils import logging as transformers_logging

    # Loading bars flash by in well under a second; keep stderr for what matters.
    transformers_logging.disable_progress_bar()
    if require_qa_head:
        transformers_logging.set_verbosity_error()
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise QAError(_load_problem(name_or_path, "model", error)) from None
    architectures = config.architectures or []
    if require_qa_head and not any(name.endswith("ForQuestionAnswering") for name in architectures):
        raise QAError(
            f"{name_or_path}: not a question-answering model (architectures: {', '.join(architectures) or 'none'}); "
            "fine-tune it with train.py first"
        )
    try:
        return AutoModelForQuestionAnswering.from_pretrained(name_or_path, config=config)
    except (OSError, ValueError) as error:
        raise QAError(_load_problem(name_or_path, "model", error)) from None


def read_training_args(checkpoint: str) -> dict[str, Any]:
    """The training arguments train.py recorded beside a checkpoint, or {} for other models."""
    path = Path(checkpoint) / TRAINING_ARGS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise QAError(f"{path}: invalid JSON") from None


def _load_problem(name_or_path: str, what: str, error: Exception) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if Path(name_or_path).exists():
        return f"{name_or_path}: cannot load the {what} from this directory ({first_line})"
    if "/" in name_or_path and (name_or_path.startswith((".", "/", "~")) or Path(name_or_path).parent.exists()):
        return f"{name_or_path}: no such checkpoint directory"
    return (
        f"could not load the {what} '{name_or_path}' from the Hugging Face hub ({first_line}); "
        "offline, pass a local model directory"
    )
