"""User-facing errors: one clear line, no traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import Any


class QAError(Exception):
    """A problem with the user's input or environment, reported as one line.

    Entry points catch it, print ``error: <message>`` on stderr and exit with
    status 2; everything else is a bug and keeps its traceback.
    """


def record_error(path: str, record: str | int, field: str, problem: str) -> QAError:
    """An error that names the file, the record (id or index) and the field."""
    where = f"record {record!r}" if isinstance(record, str) else f"record #{record}"
    return QAError(f"{path}: {where}, field '{field}': {problem}")


def exit_on_qa_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command's main function so a QAError ends the process cleanly."""

    @wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except QAError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
