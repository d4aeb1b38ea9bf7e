"""Raw SQuAD examples from the hub or from local files, checked record by record.

Every loader returns a `datasets.Dataset` with the columns of the hub's `squad`:
``id``, ``title``, ``context``, ``question`` and
``answers = {"text": [...], "answer_start": [...]}``.

Local files may be the official nested SQuAD JSON
(``{"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]}``) or flat
records with those columns as JSON lines, a JSON list, CSV (``answers`` as a JSON
string) or Parquet, in the shapes `qa.data.shapes` reads as well. Bad data stops
with one line naming the file, the record and the field; for training, answers
whose ``answer_start`` does not point at their text are skipped and counted
instead, since they would teach a wrong span.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.data.shapes import ACCEPTED_ANSWERS, as_squad_record
from qa.errors import QAError, record_error
from qa.hub import hub_unreachable, unreachable_note
from qa.text import has_visible_character, jsonl_records, label_problem, parse_json, read_text, text_problem

if TYPE_CHECKING:
    import datasets

REQUIRED_FIELDS = ("id", "context", "question", "answers")
LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def squad_features() -> datasets.Features:
    """The column types of the hub's `squad` dataset."""
    import datasets

    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "title": datasets.Value("string"),
            "context": datasets.Value("string"),
            "question": datasets.Value("string"),
            "answers": {
                "text": datasets.List(datasets.Value("string")),
                "answer_start": datasets.List(datasets.Value("int32")),
            },
        }
    )


def load_examples(
    dataset: str = "squad",
    split: str = "train",
    file: str | os.PathLike[str] | None = None,
    *,
    for_training: bool,
    max_samples: int | None = None,
) -> datasets.Dataset:
    """Load one split of raw examples: from ``file`` when given, else the hub.

    ``for_training`` decides what happens to answers that do not match their
    context: skipped (and counted on stderr) for training, kept for evaluation
    where only the answer text is scored. ``max_samples`` keeps the first N
    records after validation.
    """
    columns = _load_columns(dataset, split, file, for_training=for_training)
    return _as_dataset(columns, max_samples)


def load_training_examples(
    dataset: str, files: list[str] | None, *, max_samples: int | None = None
) -> datasets.Dataset:
    """Training examples from the union of ``files`` (ids unique across them), else the hub's train split."""
    if not files:
        return load_examples(dataset, "train", None, for_training=True, max_samples=max_samples)
    merged: dict[str, list[Any]] = {}
    first_file_of: dict[str, str] = {}
    for file in files:
        columns = _load_columns(dataset, "train", file, for_training=True)
        for example_id in columns["id"]:
            if example_id in first_file_of:
                raise record_error(str(file), example_id, "id", f"duplicate id (also in {first_file_of[example_id]})")
            first_file_of[example_id] = str(file)
        merged = {name: merged[name] + columns[name] for name in merged} if merged else columns
    return _as_dataset(merged, max_samples)


def _load_columns(
    dataset: str, split: str, file: str | os.PathLike[str] | None, *, for_training: bool
) -> dict[str, list[Any]]:
    if file is not None:
        source = str(file)
        records = read_local_records(Path(file))
    else:
        source = f"{dataset}[{split}]"
        records = _hub_records(dataset, split)
    try:
        columns = validate_records(records, source, for_training=for_training)
    except UnicodeDecodeError as error:
        raise QAError(f"{source}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:  # unreadable file: permissions, a directory, an I/O error
        raise QAError(f"{source}: cannot read ({error.strerror or error})") from None
    return columns


def _as_dataset(columns: dict[str, list[Any]], max_samples: int | None) -> datasets.Dataset:
    import datasets

    if max_samples is not None:
        columns = {name: values[:max_samples] for name, values in columns.items()}
    return datasets.Dataset.from_dict(columns, features=squad_features())


def read_local_records(path: Path) -> Iterator[tuple[str | int, dict[str, Any]]]:
    """Yield ``(record label, flat record)`` pairs from a local file of any supported format."""
    if not path.is_file():
        raise QAError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_records(path)
    if suffix == ".jsonl":
        return _jsonl_records(path)
    if suffix == ".csv":
        return _csv_records(path)
    if suffix == ".parquet":
        return _parquet_records(path)
    raise QAError(f"{path}: unsupported file type '{suffix}' (use one of {', '.join(LOCAL_SUFFIXES)})")


def _json_records(path: Path) -> Iterator[tuple[str | int, dict[str, Any]]]:
    document = parse_json(read_text(path), str(path))
    if isinstance(document, dict) and "data" in document:
        return _nested_squad_records(path, document["data"])
    if isinstance(document, list):
        return ((index, record) for index, record in enumerate(document))
    raise QAError(f'{path}: expected the nested SQuAD format ({{"data": [...]}}) or a JSON list of records')


def _nested_squad_records(path: Path, articles: Any) -> Iterator[tuple[str | int, dict[str, Any]]]:
    """Flatten ``data -> paragraphs -> qas`` into one record per question."""
    if not isinstance(articles, list):
        raise QAError(f"{path}: field 'data' must be a list of articles")
    for article_index, article in enumerate(articles):
        where = f"data[{article_index}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise QAError(f"{path}: record {where}, field 'paragraphs': missing or not a list")
        title = article.get("title", "")
        for paragraph_index, paragraph in enumerate(article["paragraphs"]):
            where = f"data[{article_index}].paragraphs[{paragraph_index}]"
            if not isinstance(paragraph, dict):
                raise QAError(f"{path}: record {where}: not an object")
            for field in ("context", "qas"):
                if field not in paragraph:
                    raise QAError(f"{path}: record {where}, field '{field}': missing")
            if not isinstance(paragraph["qas"], list):
                raise QAError(f"{path}: record {where}, field 'qas': not a list")
            for qa_index, qa in enumerate(paragraph["qas"]):
                label: str | int = f"{where}.qas[{qa_index}]"
                if not isinstance(qa, dict):
                    raise QAError(f"{path}: record {label}: not an object")
                if isinstance(qa.get("id"), str):
                    label = qa["id"]
                answers = qa.get("answers")
                if answers is None and qa.get("is_impossible") is True:
                    answers = []  # SQuAD v2.0 writers may leave out the empty list of an unanswerable question
                if not isinstance(answers, list):
                    raise record_error(str(path), label, "answers", "missing or not a list")
                texts, starts = [], []
                for answer in answers:
                    if not isinstance(answer, dict) or "text" not in answer or "answer_start" not in answer:
                        raise record_error(str(path), label, "answers", "each answer needs 'text' and 'answer_start'")
                    texts.append(answer["text"])
                    starts.append(answer["answer_start"])
                record = {
                    "id": qa.get("id"),
                    "title": title,
                    "context": paragraph["context"],
                    "question": qa.get("question"),
                    "answers": {"text": texts, "answer_start": starts},
                }
                if "is_impossible" in qa:  # SQuAD v2.0; its plausible_answers are never a target
                    record["is_impossible"] = qa["is_impossible"]
                yield label, record


def _jsonl_records(path: Path) -> Iterator[tuple[str | int, dict[str, Any]]]:
    for line_number, record in jsonl_records(read_text(path), str(path)):
        yield f"line {line_number}", record


def _csv_records(path: Path) -> Iterator[tuple[str | int, dict[str, Any]]]:
    rows = csv.DictReader(io.StringIO(read_text(path), newline=""))
    for row_number, row in enumerate(rows, start=2):
        if isinstance(row.get("answers"), str) and not row["answers"].strip():
            row["answers"] = None  # an empty cell: the answer_text / answer_start columns may hold it
        elif isinstance(row.get("answers"), str):
            try:
                row["answers"] = json.loads(row["answers"])
            except (json.JSONDecodeError, RecursionError):
                label = row.get("id") or f"line {row_number}"
                raise record_error(str(path), label, "answers", "not a JSON object") from None
        yield f"line {row_number}", row


def _parquet_records(path: Path) -> Iterator[tuple[str | int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for bad files
        raise QAError(f"{path}: not a readable Parquet file ({error})") from None
    yield from enumerate(table.to_pylist())


def _hub_records(name: str, split: str) -> Iterator[tuple[str | int, dict[str, Any]]]:
    hub_unreachable()  # fail fast (or use the local cache) when there is no network
    import datasets

    try:
        hub_dataset = datasets.load_dataset(name, split=split)
    except (ConnectionError, OSError) as error:
        local_flag = "--train-file FILE.json" if split == "train" else "--validation-file FILE.json"
        raise QAError(
            f"could not load '{name}' split '{split}' from the Hugging Face hub ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no connection'}{unreachable_note()}); "
            f"offline, pass a local file instead, e.g. {local_flag}"
        ) from None
    except ValueError as error:
        raise QAError(f"dataset '{name}' has no split '{split}' ({error})") from None
    yield from enumerate(hub_dataset)


def validate_records(
    records: Iterator[tuple[str | int, dict[str, Any]]], source: str, *, for_training: bool
) -> dict[str, list[Any]]:
    """Check every record and return the kept ones as columns.

    Raises `QAError` for records that cannot be used at all; for training,
    answers misaligned with their context are skipped and counted on stderr.
    Records without answers (SQuAD v2.0's unanswerable questions) are kept.
    """
    columns: dict[str, list[Any]] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    seen_ids: dict[str, str | int] = {}
    skipped = 0
    first_skipped: str | None = None
    made_ids = 0
    for label, record in records:
        if not isinstance(record, dict):
            raise QAError(f"{source}: record {label!r}: not an object")
        record, made = as_squad_record(record, label, source)
        made_ids += made
        if record.get("answers") is None and record.get("is_impossible") is True:
            record = {**record, "answers": []}  # an unanswerable question written without its empty answers
        for field in REQUIRED_FIELDS:
            if field not in record or record[field] is None:
                raise record_error(source, label, field, "missing")
        record_id = record["id"]
        if isinstance(record_id, int) and not isinstance(record_id, bool):
            record_id = str(record_id)
        if not isinstance(record_id, str) or not record_id.strip():
            raise record_error(source, label, "id", "must be a non-empty string")
        if problem := label_problem(record_id):
            raise record_error(source, label, "id", problem)
        label = label if made else record_id  # a made id is the line: the line names the record
        for field in ("question", "context"):
            problem = text_problem(record[field])
            if problem:
                raise record_error(source, label, field, problem)
        title = record.get("title")
        if isinstance(title, str) and (problem := label_problem(title)):
            raise record_error(source, label, "title", problem)
        if record_id in seen_ids:
            raise record_error(source, label, "id", "duplicate id (also used by an earlier record)")
        seen_ids[record_id] = label
        texts, starts = _check_answers(record["answers"], source, label)
        _check_impossible(record, texts, source, label)
        context = record["context"]
        aligned = [context[start : start + len(text)] == text for text, start in zip(texts, starts, strict=True)]
        if for_training:
            if not all(aligned):
                skipped += 1
                first_skipped = first_skipped or f"{record_id!r}"
                continue
        if any(start + len(text) > len(context) for text, start in zip(texts, starts)):
            raise record_error(
                source, label, "answers.answer_start", f"points past the end of the context ({len(context)} characters)"
            )
        columns["id"].append(record_id)
        columns["title"].append(title if isinstance(title, str) else "")
        columns["context"].append(context)
        columns["question"].append(record["question"])
        columns["answers"].append({"text": texts, "answer_start": starts})
    if not columns["id"]:
        raise QAError(f"{source}: no usable records")
    if skipped:
        print(
            f"warning: {source}: skipped {skipped} training record(s) whose answer_start does not point at the "
            f"answer text (first: {first_skipped}); kept {len(columns['id'])}",
            file=sys.stderr,
        )
    if made_ids:
        print(
            f"note: {source}: {made_ids} record(s) without an id; each was given its line or row number as its id "
            "(the same on every run)",
            file=sys.stderr,
        )
    return columns


def _check_impossible(record: dict[str, Any], texts: list[str], source: str, label: str | int) -> None:
    """SQuAD v2.0's flag must agree with the answers: unanswerable exactly when there are none."""
    if "is_impossible" not in record or record["is_impossible"] is None:
        return
    impossible = record["is_impossible"]
    if not isinstance(impossible, bool):
        raise record_error(source, label, "is_impossible", f"must be true or false, got {impossible!r}")
    if impossible and texts:
        raise record_error(source, label, "answers", "must be empty for a question marked is_impossible")
    if not impossible and not texts:
        raise record_error(source, label, "answers", "is empty but the question is not marked is_impossible")


def _check_answers(answers: Any, source: str, label: str | int) -> tuple[list[str], list[int]]:
    if answers == []:  # a natural way to write "no answer" in flat records
        return [], []
    if not isinstance(answers, dict) or "text" not in answers or "answer_start" not in answers:
        raise record_error(source, label, "answers", f"not in an accepted shape: {ACCEPTED_ANSWERS}")
    texts, starts = answers["text"], answers["answer_start"]
    if not isinstance(texts, list) or not isinstance(starts, list):
        raise record_error(source, label, "answers", "'text' and 'answer_start' must be lists")
    if len(texts) != len(starts):
        raise record_error(source, label, "answers", f"{len(texts)} texts but {len(starts)} answer_start values")
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise record_error(source, label, "answers.text", "must be a non-empty string")
        if not has_visible_character(text):
            raise record_error(
                source,
                label,
                "answers.text",
                "holds no visible character (white space, zero-width or format characters and combining marks alone)",
            )
        if problem := label_problem(text):
            raise record_error(source, label, "answers.text", problem)
    clean_starts = []
    for start in starts:
        if isinstance(start, str) and start.strip().lstrip("-").isdigit():
            start = int(start)
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            raise record_error(source, label, "answers.answer_start", f"must be a non-negative integer, got {start!r}")
        clean_starts.append(start)
    return texts, clean_starts
