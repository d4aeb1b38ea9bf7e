"""The one rule for the text every entry point accepts, and reading it.

Data files, ``predict.py --input``, ``--context-file``, standard input, command-line
arguments and HTTP bodies all go through here, so the same string is accepted or
refused alike everywhere:

- input is UTF-8; a leading byte-order mark (U+FEFF) of a file, of standard input or of
  an HTTP body is dropped;
- a text field must be valid Unicode: a lone surrogate (a ``"\\ud800"`` JSON escape, or a
  command-line byte that is not UTF-8) is refused with one line naming the field and the
  record. It is refused rather than replaced because a replaced character would move the
  character offsets of every answer after it;
- a question or context must hold a visible character: white space, control characters and
  zero-width format characters alone count as empty;
- anything else is kept exactly as given; answer offsets count code points of that text.

JSON Lines are split at ``\\n`` only (``\\r\\n`` too): ``str.splitlines`` would also split
inside strings at U+2028, U+2029 or U+0085, which JSON allows raw.
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qa.errors import QAError

BOM = "\ufeff"
# Python decodes a command-line byte that is not UTF-8 as one of these (PEP 383, surrogateescape).
_ESCAPED_BYTES = range(0xDC80, 0xDD00)
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp"}
# Combining marks draw on a base character: a text of marks alone has nothing to answer with (tokenizers
# that strip accents read it as empty).
_MARK_CATEGORIES = {"Mn", "Me"}


def text_problem(value: Any, *, from_command_line: bool = False) -> str | None:
    """Why ``value`` is not acceptable text (None when it is): the rule of this module."""
    if not isinstance(value, str):
        return "must be a string"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        code = ord(value[error.start])
        if from_command_line and code in _ESCAPED_BYTES:
            return f"is not UTF-8 text (byte 0x{code - 0xDC00:02X} at character {error.start})"
        return f"is not valid Unicode text (lone surrogate U+{code:04X} at character {error.start})"
    if not has_visible_character(value):
        return "is empty (no visible character)" if value else "is empty"
    return None


def label_problem(value: str) -> str | None:
    """Ids, titles and answer texts need only be valid Unicode (an empty title is fine)."""
    problem = text_problem(value)
    return None if problem is None or problem.startswith("is empty") else problem


def starts_invisibly(character: str) -> bool:
    """A character no span may start with: white space, a control or format character (zero-width space,
    soft hyphen, joiners, BOM) or a combining mark (it would draw on nothing)."""
    category = unicodedata.category(character)
    return character.isspace() or category in _INVISIBLE_CATEGORIES or category in _MARK_CATEGORIES


def ends_invisibly(character: str) -> bool:
    """A character no span may end with: white space, a control or format character (a combining mark at
    the end belongs to the character before it)."""
    return character.isspace() or unicodedata.category(character) in _INVISIBLE_CATEGORIES


def has_visible_character(value: str) -> bool:
    """Whether ``value`` holds something other than white space, control and zero-width characters and
    combining marks (a base character that marks could sit on)."""
    hidden = _INVISIBLE_CATEGORIES | _MARK_CATEGORIES
    return any(not character.isspace() and unicodedata.category(character) not in hidden for character in value)


def decode_utf8(data: bytes, where: str) -> str:
    """Bytes of a file, standard input or a body as text: UTF-8, a leading BOM dropped."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise QAError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def read_text(path: Path) -> str:
    """A whole file as text under the rule above; unreadable files are one line."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise QAError(f"{path}: cannot read ({error.strerror or error})") from None
    return decode_utf8(data, str(path))


def read_stdin(where: str) -> str:
    if sys.stdin is None or sys.stdin.closed:
        raise QAError(f"{where}: standard input is closed")
    try:
        data = sys.stdin.buffer.read()
    except OSError as error:
        raise QAError(f"{where}: cannot read standard input ({error.strerror})") from None
    return decode_utf8(data, f"{where} (standard input)")


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with its failures (also nesting too deep to parse) as one line naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise QAError(f"{where}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}") from None
    except RecursionError:
        raise QAError(f"{where}: invalid JSON: nested too deeply") from None


class DuplicateKey(ValueError):
    """A JSON object that names a key twice: json.loads would keep the last value without a word."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(f"duplicate key {key!r}")
        found[key] = value
    return found


def loads_record(text: str) -> Any:
    """``json.loads`` for a record (a JSON Lines line, an HTTP body): a key given twice is refused
    (`DuplicateKey`), not silently the last one."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def jsonl_records(text: str, where: str) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of a JSON Lines text."""
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            yield number, jsonl_record(line, where, number)


def jsonl_record(line: str, where: str, number: int) -> Any:
    """The value of one JSON Lines line, or a one-line error naming the file and line."""
    try:
        return loads_record(line)
    except DuplicateKey as error:
        raise QAError(f"{where}: line {number}: {error}") from None
    except json.JSONDecodeError as error:
        raise QAError(f"{where}: line {number}: invalid JSON ({error.msg})") from None
    except RecursionError:
        raise QAError(f"{where}: line {number}: invalid JSON (nested too deeply)") from None
