"""Argument types and checks shared by the three commands."""

from __future__ import annotations

import argparse

from qa.errors import QAError


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


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in --help and errors as one line with exit status 2."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")
