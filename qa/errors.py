"""User-facing errors: one clear line, no traceback."""

from __future__ import annotations

import errno
import os
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
    """Wrap a command's main function so the ways a user ends or breaks it end in one line.

    QAError: status 2. Ctrl-C outside the training loop (which checkpoints itself): status 130.
    Output piped into a reader that stopped (``| head``): quiet, status 141 as for SIGPIPE.
    A full disk anywhere (logs, result files, the cache): one line, status 2.
    """

    @wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except QAError as error:
            _say(f"error: {error}")
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            _say("error: interrupted")
            raise SystemExit(130) from None
        except BrokenPipeError:
            # Python would complain again while flushing stdout at exit; point it at /dev/null.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141) from None
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            _say(f"error: no space left on the device ({error.filename or 'while writing'})")
            raise SystemExit(2) from None

    return wrapper


def _say(line: str) -> None:
    """One line on stderr in one write, so that the lines of processes sharing it (torchrun's ranks) never
    interleave within a line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def first_line(error: BaseException, limit: int | None = None) -> str:
    """An exception's message as one line for a one-line error: its first line (cut at ``limit``), or its type."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
