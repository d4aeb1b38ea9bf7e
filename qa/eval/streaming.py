"""predict.py --input at any size: questions read, answered and written in chunks, so memory follows the
chunk and not the input; resumable after a kill; shared among torchrun's processes.

Chunk k holds questions [k * chunk_size, (k + 1) * chunk_size) of the input (blank lines skipped, as
always): fixed positions, so a resumed run and a run of any number of processes batch each chunk as an
uninterrupted single process does, and write the same records in the same order.

With ``--output PATH`` each chunk is appended whole, flushed to disk, and only then recorded in a
progress file beside it (`qa.eval.stream_output`: the record binds settings, output and input).
``--resume`` checks them, cuts the output back to the record's length (a chunk a kill interrupted is
written again) and continues. Under torchrun, chunk k goes to rank k % world size, and rank 0 writes
every round of chunks in order (standard output too); a rank that fails ends every rank with its line.
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
from qa.eval.stream_output import (
    Progress,
    Sink,
    check_resumable,
    input_tally,
    is_stream,
    progress_path,
    read_progress,
)
from qa.files import json_line, write_json
from qa.runtime.device import Runtime, barrier
from qa.text import BOM, jsonl_record


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
    bytes_read: int  # the input's bytes up to there


@dataclass
class InputTally:
    """The whole input as read, once it has been: its bytes and their sha256."""

    size: int = 0
    digest: str = ""


def _chunks(stream: BinaryIO, where: str, read: Any, size: int, tally: InputTally) -> Iterator[Chunk]:
    digest = hashlib.sha256()
    current: list[Question] = []
    index = read_bytes = 0
    for line in _lines(stream):
        digest.update(line.raw)
        read_bytes += len(line.raw)
        question = _question(line, where, read)
        if question is None:
            continue
        current.append(question)
        if len(current) == size:
            yield Chunk(index, current, digest.copy().hexdigest(), read_bytes)
            current, index = [], index + 1
    if current:
        yield Chunk(index, current, digest.copy().hexdigest(), read_bytes)
    tally.size, tally.digest = read_bytes, digest.hexdigest()


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
    if not Path(source).exists():
        raise QAError(f"{source}: no such file")
    with _open_input(source) as stream:
        return sum(_question(line, source, read) is not None for line in _lines(stream))


# How a resume names the settings that differ: by the flag that sets them (nested ones flattened).
_SETTING_NAMES = {
    "checkpoint": "--ckpt",
    "calibrator": "the model's calibrator",
    "decode.null_threshold": "--null-threshold",
}


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict) and key in ("window", "decode"):
            flat.update(_flat(value, f"{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _setting_name(key: str) -> str:
    return _SETTING_NAMES.get(key) or "--" + key.rsplit(".", 1)[-1].replace("_", "-")


def _differences(began: dict[str, Any], now: dict[str, Any]) -> str:
    """The settings that differ, named by their flags: "--top-k 3 (the run began with 1)"."""
    began, now = _flat(began), _flat(now)
    changed = [name for name in sorted(set(began) | set(now)) if began.get(name) != now.get(name)]
    return ", ".join(
        f"{_setting_name(name)} {now.get(name)!r} (the run began with {began.get(name)!r})" for name in changed
    )


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
    to ``output`` (None: standard output) as each chunk is done; returns the number of questions.
    ``output`` was checked (`qa.eval.stream_output.check_output_path`) and is locked by the caller."""
    runtime = reader.runtime
    # Each rank answers whole chunks of its own: its reader runs as a single process (no sharding of
    # windows across ranks, no collective inside answering); the ranks meet once per round, to gather.
    solo = replace(reader, runtime=replace(runtime, rank=0, world_size=1))
    out_path = Path(output) if output is not None else None
    recorded = out_path is not None and not is_stream(out_path)
    done = Progress.fresh(settings)
    if recorded and out_path is not None:
        if resume:
            done = _resumed(out_path, settings, chunk_size, source)
        barrier(runtime)  # every rank has read the output as it was before rank 0 changes it
        if runtime.is_main:
            _start_output(out_path, done)
        if done.complete:
            if runtime.is_main:
                print(f"{out_path}: already complete ({done.questions_done} questions); nothing to do", file=sys.stderr)
            return done.questions_done
    bar = _progress_bar(progress and runtime.is_main, total, done.questions_done)
    sink = Sink(out_path, done, recorded) if runtime.is_main else None
    answered = done.questions_done
    tally = InputTally()
    with _open_input(source) as stream:
        rounds = _rounds(_chunks(stream, source, read, chunk_size, tally), runtime.world_size, done)
        for round_chunks in rounds:
            mine = round_chunks[runtime.rank] if runtime.rank < len(round_chunks) else None
            lines: list[str] | str | None = None
            shown = _ChunkProgress(bar, len(mine.questions) if mine is not None else 0, runtime.distributed)
            if mine is not None:
                lines = _answered_lines(solo, mine, runtime, shown)
            everyone = _gather(runtime, lines)
            problem = next((item for item in everyone if isinstance(item, str)), None)
            if sink is not None and problem is None:
                try:
                    for chunk, chunk_lines in zip(round_chunks, everyone, strict=False):
                        sink.write(chunk, chunk_lines if isinstance(chunk_lines, list) else None)
                        answered += len(chunk.questions)
                        bar.update(len(chunk.questions) - (shown.shown if chunk is mine else 0))
                except QAError as error:
                    problem = str(error)
            elif sink is None:
                answered += sum(len(chunk.questions) for chunk in round_chunks)
            _agreed(runtime, problem)
    if answered == 0 and done.questions_done == 0:
        raise QAError(f"{source}: no questions in the file")
    if sink is not None:
        sink.finish((tally.size, tally.digest))
    bar.close()
    barrier(runtime)
    return answered


class _ChunkProgress:
    """The progress bar moves with a chunk's forward passes (its share of the chunk's windows done, in
    questions), not only once a whole chunk is written; under torchrun, by chunks."""

    def __init__(self, bar: Any, questions: int, distributed: bool) -> None:
        self.bar, self.questions, self.enabled = bar, questions, not distributed
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or not total:
            return
        # one short of the whole chunk until it is written: the bar counts answers on their way out
        target = min(self.questions - 1, self.questions * done // total)
        if target > self.shown:
            self.bar.update(target - self.shown)
            self.shown = target


def _answered_lines(solo: Reader, chunk: Chunk, runtime: Runtime, shown: _ChunkProgress) -> list[str] | str:
    """A chunk's output lines; under torchrun a failure becomes its one line, for every rank to end with."""
    try:
        results = solo.answer(chunk.questions, on_batch=shown)
        return [json_line(shape_answers(a, q)) + "\n" for a, q in zip(results, chunk.questions, strict=True)]
    except QAError as error:
        if not runtime.distributed:
            raise
        return str(error)


def _rounds(chunks: Iterator[Chunk], world_size: int, done: Progress) -> Iterator[list[Chunk]]:
    """Chunks not done yet, ``world_size`` at a time (chunk k of a round to rank k); the input before
    them must be, byte for byte, the one the run being resumed read."""
    current: list[Chunk] = []
    checked = done.chunks_done == 0
    for chunk in chunks:
        if chunk.index < done.chunks_done:
            if chunk.index == done.chunks_done - 1:
                if (chunk.digest, chunk.bytes_read) != (done.input_digest, done.input_bytes):
                    raise _input_changed(done)
                checked = True
            continue
        current.append(chunk)
        if len(current) == world_size:
            yield current
            current = []
    if not checked:  # the input ends before the questions the run had answered
        raise _input_changed(done)
    if current:
        yield current


def _input_changed(done: Progress) -> QAError:
    return QAError(
        f"--resume: the input changed since the run began (its first {done.questions_done} questions are not "
        "those the output answers): --overwrite to start again"
    )


def _gather(runtime: Runtime, lines: list[str] | str | None) -> list[Any]:
    """Every rank's lines of a round, on rank 0 (empty on the others)."""
    if not runtime.distributed:
        return [lines]
    import torch

    everyone: list[Any] | None = [None] * runtime.world_size if runtime.is_main else None
    torch.distributed.gather_object(lines, everyone, dst=0)
    return everyone or []


def _resumed(output: Path, settings: dict[str, Any], chunk_size: int, source: str) -> Progress:
    """The record of the run to continue, refused in one line when its settings, its output or (for a
    complete run) its input are not what it recorded."""
    progress = read_progress(output, chunk_size)
    if progress.settings != settings:
        raise QAError(
            f"--resume: {_differences(progress.settings, settings)}; a resumed run must answer as the run it "
            "continues: give the same settings, or start again with --overwrite"
        )
    check_resumable(output, progress)
    if progress.complete:
        with _open_input(source) as stream:
            if input_tally(stream) != (progress.input_bytes, progress.input_digest):
                raise QAError(
                    f"--resume: the input changed since the run began ({source} is not the input {output} answers): "
                    "--overwrite to start again"
                )
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


def _agreed(runtime: Runtime, problem: str | None) -> None:
    """Under torchrun every rank learns rank 0's problem of this round (a write that failed, or any rank's
    failure it gathered) and ends with it, rather than waiting for the next round forever."""
    if runtime.distributed:
        import torch

        shared: list[Any] = [problem]
        torch.distributed.broadcast_object_list(shared, src=0)
        problem = shared[0]
    if problem is not None:
        raise QAError(problem)


def _progress_bar(enabled: bool, total: int | None, initial: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="answering", unit="question", file=sys.stderr)
