"""predict.py --input at any size: questions read, answered and written in chunks, so memory follows the
chunk and not the input; resumable after a kill; shared among torchrun's processes.

Chunk k holds questions [k * chunk_size, (k + 1) * chunk_size) of the input (blank lines skipped, as
always): fixed positions, so a resumed run and a run of any number of processes batch each chunk as an
uninterrupted single process does, and write the same records in the same order.

With ``--output PATH`` each chunk is appended whole, flushed to disk, and only then recorded in a
progress file beside it (``.NAME.progress.json``: the settings, the questions done, the output's length
and a hash of the input lines read). ``--resume`` cuts the output back to that length (a chunk a kill
interrupted is written again), checks that the settings and the input up to there are the same, and
continues. Under torchrun, chunk k goes to rank k % world size, and rank 0 writes every round of chunks
in order (standard output too).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from qa.data.questions import Question, QuestionProblem
from qa.errors import QAError
from qa.eval.answering import Reader
from qa.eval.responses import shape_answers
from qa.files import json_line, read_json_object, write_json
from qa.runtime.device import Runtime, barrier
from qa.text import BOM, jsonl_record

PROGRESS_VERSION = 1


@dataclass
class InputLine:
    number: int  # 1-based line number in the input
    raw: bytes  # the line as read, with its line break


def _lines(stream: BinaryIO) -> Iterator[InputLine]:
    for number, raw in enumerate(stream, start=1):
        yield InputLine(number, raw)


def _question(line: InputLine, where: str, read: Any) -> Question | None:
    """The question of one line (None for a blank line), or a one-line error naming file and line."""
    try:
        text = line.raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise QAError(f"{where}: line {line.number}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    if line.number == 1:
        text = text.removeprefix(BOM)
    text = text.removesuffix("\n")
    if not text.strip():
        return None
    record = jsonl_record(text, where, line.number)
    try:
        question = read(record)
    except QuestionProblem as problem:
        hint = " (JSON Lines holds one object per line, not a JSON array)" if isinstance(record, list) else ""
        raise QAError(f"{where}: line {line.number}, {problem.describe()}{hint}") from None
    if question.id is None:
        question.id = str(line.number)  # the default id: the line number
    return question


@dataclass
class Chunk:
    index: int
    questions: list[Question]
    digest: str  # sha256 of the input's bytes up to this chunk's last line


def _chunks(stream: BinaryIO, where: str, read: Any, size: int) -> Iterator[Chunk]:
    digest = hashlib.sha256()
    current: list[Question] = []
    index = 0
    for line in _lines(stream):
        digest.update(line.raw)
        question = _question(line, where, read)
        if question is None:
            continue
        current.append(question)
        if len(current) == size:
            yield Chunk(index, current, digest.copy().hexdigest())
            current, index = [], index + 1
    if current:
        yield Chunk(index, current, digest.hexdigest())


@contextmanager
def _open_input(source: str) -> Iterator[BinaryIO]:
    """The input's bytes: a file, or standard input for "-" (left open)."""
    if source == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise QAError("--input -: standard input is closed")
        yield sys.stdin.buffer
        return
    path = Path(source)
    try:
        handle = path.open("rb")
    except OSError as error:
        raise QAError(f"{path}: cannot read ({error.strerror})") from None
    with handle:
        yield handle


def count_questions(source: str, read: Any) -> int:
    """Check every line of a file before any work (a bad line is then refused before any output, as
    for a small file) and count its questions, for the progress bar; standard input is checked as it
    comes instead."""
    if not Path(source).is_file():
        raise QAError(f"{source}: no such file")
    with _open_input(source) as stream:
        return sum(_question(line, source, read) is not None for line in _lines(stream))


@dataclass
class Progress:
    """What the progress file beside an --output records."""

    version: int
    settings: dict[str, Any]
    questions_done: int
    chunks_done: int
    output_bytes: int
    input_digest: str | None
    complete: bool = False


def progress_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.progress.json")


def _read_progress(output: Path) -> Progress | None:
    path = progress_path(output)
    if not path.is_file():
        return None
    stored = read_json_object(path, "the progress of the run to resume")
    try:
        return Progress(**stored)
    except TypeError:
        raise QAError(f"{path}: not a progress file of this version; start again with --overwrite") from None


def _differences(began: dict[str, Any], now: dict[str, Any]) -> str:
    changed = [name for name in sorted(set(began) | set(now)) if began.get(name) != now.get(name)]
    return ", ".join(f"{name} {now.get(name)!r} (the run began with {began.get(name)!r})" for name in changed)


def stream_settings(reader: Reader, top_k: int, min_confidence: float | None, chunk_size: int) -> dict[str, Any]:
    """Everything that decides the records of a run (a resumed run must have the same): the model, how
    it reads and decodes, its precision and calibrator, the defaults of the lines, the chunks. Not the
    number of processes: the chunks are the same for any."""
    settings = reader.settings
    return json.loads(
        json.dumps(
            {
                "checkpoint": str(Path(reader.checkpoint).resolve())
                if Path(reader.checkpoint).exists()
                else reader.checkpoint,
                "window": asdict(settings.window),
                "decode": asdict(settings.decode),
                "batch_size": settings.batch_size,
                "max_batch_tokens": settings.max_batch_tokens,
                "precision": reader.runtime.precision,
                "calibrator": asdict(settings.calibrator) if settings.calibrator is not None else None,
                "top_k": top_k,
                "min_confidence": min_confidence,
                "chunk_size": chunk_size,
            }
        )
    )


def answer_stream(
    reader: Reader,
    source: str,
    read: Any,
    *,
    chunk_size: int,
    output: str | None,
    resume: bool,
    overwrite: bool,
    settings: dict[str, Any],
    progress: bool,
    total: int | None = None,
) -> int:
    """Answer every question of ``source`` (a path or "-") in chunks, writing one JSON line per question
    to ``output`` (None: standard output) as each chunk is done; returns the number of questions."""
    runtime = reader.runtime
    # Each rank answers whole chunks of its own: its reader runs as a single process (no sharding of
    # windows across ranks, no collective inside answering); the ranks meet once per round, to gather.
    solo = replace(reader, runtime=replace(runtime, rank=0, world_size=1))
    out_path = Path(output) if output is not None else None
    done = Progress(PROGRESS_VERSION, settings, 0, 0, 0, None)
    if out_path is not None:
        done = _check_output(out_path, settings, resume, overwrite)
        barrier(runtime)  # every rank has read the output as it was before rank 0 changes it
        if runtime.is_main:
            _start_output(out_path, done)
        if done.complete:
            if runtime.is_main:
                print(f"{out_path}: already complete ({done.questions_done} questions); nothing to do", file=sys.stderr)
            return done.questions_done
    bar = _progress_bar(progress and runtime.is_main, total, done.questions_done)
    sink = _Sink(out_path, done) if runtime.is_main else None
    answered = done.questions_done
    with _open_input(source) as stream:
        rounds = _rounds(_chunks(stream, source, read, chunk_size), runtime.world_size, done)
        for round_chunks in rounds:
            mine = round_chunks[runtime.rank] if runtime.rank < len(round_chunks) else None
            lines = None
            if mine is not None:
                results = solo.answer(mine.questions)
                lines = [json_line(shape_answers(a, q)) + "\n" for a, q in zip(results, mine.questions, strict=True)]
            everyone = _gather(runtime, lines)
            if sink is not None:
                for chunk, chunk_lines in zip(round_chunks, everyone, strict=False):
                    sink.write(chunk, chunk_lines)
                    answered += len(chunk.questions)
                    bar.update(len(chunk.questions))
            else:
                answered += sum(len(chunk.questions) for chunk in round_chunks)
    if answered == 0 and done.questions_done == 0:
        raise QAError(f"{source}: no questions in the file")
    if sink is not None:
        sink.finish()
    bar.close()
    barrier(runtime)
    return answered


def _rounds(chunks: Iterator[Chunk], world_size: int, done: Progress) -> Iterator[list[Chunk]]:
    """Chunks not done yet, ``world_size`` at a time (chunk k of a round to rank k); the input before
    them must hash as it did in the run being resumed."""
    current: list[Chunk] = []
    for chunk in chunks:
        if chunk.index < done.chunks_done:
            if chunk.index == done.chunks_done - 1 and chunk.digest != done.input_digest:
                raise QAError(
                    f"--resume: the input's first {done.questions_done} questions differ from those of the run "
                    "being resumed; use the same input, or start again with --overwrite"
                )
            continue
        current.append(chunk)
        if len(current) == world_size:
            yield current
            current = []
    if current:
        yield current


def _gather(runtime: Runtime, lines: list[str] | None) -> list[list[str] | None]:
    """Every rank's lines of a round, on rank 0 (empty on the others)."""
    if not runtime.distributed:
        return [lines]
    import torch

    everyone: list[Any] | None = [None] * runtime.world_size if runtime.is_main else None
    torch.distributed.gather_object(lines, everyone, dst=0)
    return everyone or []


def _check_output(output: Path, settings: dict[str, Any], resume: bool, overwrite: bool) -> Progress:
    """The progress to continue from (none for a new file), changing nothing; refuses an existing output
    unless told what to do with it, and a resume under other settings."""
    fresh = Progress(PROGRESS_VERSION, settings, 0, 0, 0, None)
    if output.exists() and output.is_dir():
        raise QAError(f"--output {output}: is a directory")
    if not output.parent.is_dir():
        raise QAError(f"--output {output}: no such directory {output.parent}")
    if not resume:
        if output.exists() and not overwrite:
            raise QAError(
                f"--output {output}: exists; --resume continues the run that wrote it, --overwrite replaces it"
            )
        return fresh
    if not output.exists():
        raise QAError(f"--resume: {output} does not exist; run without --resume to start")
    progress = _read_progress(output)
    if progress is None:
        raise QAError(
            f"--resume: {output} has no progress record ({progress_path(output).name}): it was not written by "
            "predict.py --output; --overwrite replaces it"
        )
    if progress.settings != settings:
        raise QAError(
            f"--resume: {_differences(progress.settings, settings)}; a resumed run must answer as the run it "
            "continues: give the same settings, or start again with --overwrite"
        )
    if output.stat().st_size < progress.output_bytes:
        raise QAError(f"--resume: {output} is shorter than its progress record says: start again with --overwrite")
    return progress


def _start_output(output: Path, progress: Progress) -> None:
    """Rank 0: an empty output and progress record for a new run; for a resumed one, the output cut back
    to what the record holds (a chunk cut short by the kill is written again)."""
    if progress.chunks_done == 0 and not progress.complete:
        with output.open("wb"):
            pass
        write_json(progress_path(output), asdict(progress))
    elif output.stat().st_size > progress.output_bytes:
        os.truncate(output, progress.output_bytes)


class _Sink:
    """Rank 0's writer: standard output, or an --output file with its progress record."""

    def __init__(self, output: Path | None, progress: Progress) -> None:
        self.progress = progress
        self.file = (output, output.open("ab")) if output is not None else None

    def write(self, chunk: Chunk, lines: list[str] | None) -> None:
        text = "".join(lines or [])
        if self.file is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        output, handle = self.file
        data = text.encode("utf-8")
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the progress record says so
        self.progress.questions_done += len(chunk.questions)
        self.progress.chunks_done = chunk.index + 1
        self.progress.output_bytes += len(data)
        self.progress.input_digest = chunk.digest
        write_json(progress_path(output), asdict(self.progress))

    def finish(self) -> None:
        if self.file is not None:
            output, handle = self.file
            handle.close()
            self.progress.complete = True
            write_json(progress_path(output), asdict(self.progress))


def _progress_bar(enabled: bool, total: int | None, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="answering", unit="question", file=sys.stderr)
