"""Argument types and checks shared by the three commands."""

from __future__ import annotations

import argparse
from typing import Any

from qa.decoding import MAX_ANSWER_LENGTH, N_BEST
from qa.errors import QAError
from qa.features import MAX_LENGTH, MAX_QUESTION_LENGTH, STRIDE


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def check_window_settings(max_length: int, stride: int, max_question_length: int) -> None:
    """A window must hold special tokens, some question and more context than the stride."""
    if stride >= max_length:
        raise QAError(f"--stride ({stride}) must be smaller than --max-length ({max_length})")
    if stride > max_length - 6:
        raise QAError(
            f"--stride ({stride}) leaves no room for the question and special tokens in a window of "
            f"--max-length {max_length}; use a stride of at most {max_length - 6}"
        )


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults in --help, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.nargs == 0 or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and errors as one line with exit status 2."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def add_answer_flags(group: Any, batch_size: int) -> None:
    """Window and decoding flags shared by evaluate.py and predict.py."""
    group.add_argument(
        "--max-length",
        type=positive_int,
        help=f"tokens per window (default: the checkpoint's training value, else {MAX_LENGTH})",
    )
    group.add_argument(
        "--stride", type=positive_int, help=f"tokens shared by consecutive windows (default: as trained, else {STRIDE})"
    )
    group.add_argument(
        "--max-question-length",
        type=positive_int,
        help=f"longer questions are cut to this many tokens (default: as trained, else {MAX_QUESTION_LENGTH})",
    )
    group.add_argument("--n-best", type=positive_int, default=N_BEST, help="start/end candidates per window")
    group.add_argument(
        "--max-answer-length", type=positive_int, default=MAX_ANSWER_LENGTH, help="longest answer in tokens"
    )
    group.add_argument(
        "--batch-size", type=positive_int, default=batch_size, help="windows per forward pass (per device)"
    )


def answer_settings(args: argparse.Namespace, min_n_best: int = 1) -> Any:
    """`AnswerSettings` from the flags, falling back to what the checkpoint was trained with."""
    from qa.evaluation import AnswerSettings
    from qa.modeling import read_training_args

    trained_with = read_training_args(args.ckpt)
    settings = AnswerSettings(
        max_length=args.max_length or trained_with.get("max_length", MAX_LENGTH),
        stride=args.stride or trained_with.get("stride", STRIDE),
        max_question_length=args.max_question_length or trained_with.get("max_question_length", MAX_QUESTION_LENGTH),
        n_best=max(args.n_best, min_n_best),
        max_answer_length=args.max_answer_length,
        batch_size=args.batch_size,
    )
    check_window_settings(settings.max_length, settings.stride, settings.max_question_length)
    return settings
