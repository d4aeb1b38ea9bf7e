"""Flat records in the shapes people have, read as the hub's ``squad`` columns.

Besides ``answers = {"text": [...], "answer_start": [...]}`` (``[]`` for no answer), a flat record (a
JSON Lines line, a CSV row, a JSON list item, a Parquet row) may give its answer as
- ``answer_text`` and ``answer_start`` columns (both empty for no answer), the most common export, or
- a SQuAD-style list of answer objects, ``[{"text": ..., "answer_start": ...}, ...]``;
and may leave out ``id``: it is made from the line or row number (stable from run to run).
"""

from __future__ import annotations

from typing import Any

from qa.errors import record_error

ACCEPTED_ANSWERS = (
    'answers as {"text": [...], "answer_start": [...]} or [{"text": ..., "answer_start": ...}, ...] ([] for no '
    "answer), or answer_text and answer_start columns (both empty for no answer)"
)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def as_squad_record(record: dict[str, Any], label: str | int, source: str) -> tuple[dict[str, Any], bool]:
    """``record`` with its answers in the hub's shape and an id; and whether the id was made here."""
    record = dict(record)
    if _empty(record.get("answers")) and ("answer_text" in record or "answer_start" in record):
        text, start = record.pop("answer_text", None), record.pop("answer_start", None)
        if _empty(text) and _empty(start):
            record["answers"] = []
        elif _empty(text) or _empty(start):
            missing = "answer_text" if _empty(text) else "answer_start"
            raise record_error(source, label, missing, f"is empty while the other is given; {ACCEPTED_ANSWERS}")
        else:
            record["answers"] = {"text": [text], "answer_start": [start]}
    answers = record.get("answers")
    if isinstance(answers, list) and answers and all(isinstance(answer, dict) for answer in answers):
        for answer in answers:
            if "text" not in answer or "answer_start" not in answer:
                raise record_error(
                    source, label, "answers", f"an answer object lacks text or answer_start; {ACCEPTED_ANSWERS}"
                )
        record["answers"] = {
            "text": [answer["text"] for answer in answers],
            "answer_start": [answer["answer_start"] for answer in answers],
        }
    made = record.get("id") is None
    if made:
        record["id"] = made_id(label)
    return record, made


def made_id(label: str | int) -> str:
    """The id of a record that has none: its line (JSON Lines, CSV) or row (Parquet, JSON list) number."""
    if isinstance(label, int):
        return str(label + 1)
    return label.removeprefix("line ")
