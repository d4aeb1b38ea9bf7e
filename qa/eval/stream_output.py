"""Where predict.py --input writes (`qa.eval.streaming`), and the record that makes a resume honest.

An ``--output`` that is a regular file gets a progress record beside it (``.NAME.progress.json``) that
binds the run: the settings, the questions and chunks done, the output's length and hash, the input's
length and hash up to the last chunk done and, once complete, of the whole input. ``--resume`` refuses
in one line when any of them differs, and says complete only when the output holds one record per
input question. The output is locked for the run (an ``flock`` on the file: a second run on it is
refused, naming the first), is never the input, and is checked before the model loads. A character
device, a pipe or a FIFO is written as a stream, without a record (and ``--resume`` is refused for it).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import stat
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from qa.errors import QAError
from qa.files import read_json_object, write_json

PROGRESS_VERSION = 2
_HASH_BLOCK = 1 << 20


@dataclass
class Progress:
    """What the progress file beside an --output records."""

    version: int
    settings: dict[str, Any]
    questions_done: int
    chunks_done: int
    output_bytes: int
    output_digest: str  # sha256 of the output's first output_bytes bytes
    input_bytes: int  # the input read through the last chunk done
    input_digest: str | None  # sha256 of those bytes
    complete: bool = False
    writer: str = ""  # the process that writes it: "pid N on HOST"

    @classmethod
    def fresh(cls, settings: dict[str, Any]) -> Progress:
        return cls(PROGRESS_VERSION, settings, 0, 0, 0, hashlib.sha256().hexdigest(), 0, None, writer=_me())


def progress_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.progress.json")


def _me() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


_FIELD_TYPES: dict[str, Any] = {
    "version": int,
    "settings": dict,
    "questions_done": int,
    "chunks_done": int,
    "output_bytes": int,
    "output_digest": str,
    "input_bytes": int,
    "input_digest": (str, type(None)),
    "complete": bool,
    "writer": str,
}


def read_progress(output: Path, chunk_size: int) -> Progress:
    """The record beside ``output``, checked field by field and for consistency; one line when it cannot be read."""
    path = progress_path(output)
    if not path.is_file():
        raise QAError(
            f"--resume: {output} has no progress record ({path.name}): it was not written by predict.py --output; "
            "--overwrite replaces it"
        )
    stored = read_json_object(path, "the progress of the run to resume")

    def refuse(why: str) -> QAError:
        return QAError(f"--resume: {path}: {why}; start again with --overwrite")

    if stored.get("version") != PROGRESS_VERSION:
        raise refuse(f"a progress record of version {stored.get('version')!r}, not {PROGRESS_VERSION}")
    for name, kind in _FIELD_TYPES.items():
        value = stored.get(name)
        wrong_bool = isinstance(value, bool) and kind is int
        if name not in stored or wrong_bool or not isinstance(value, kind):
            raise refuse(f"field {name!r} is missing or of the wrong type")
    unknown = sorted(set(stored) - set(_FIELD_TYPES))
    if unknown:
        raise refuse(f"unknown field {unknown[0]!r}")
    progress = Progress(**stored)
    counts = [progress.questions_done, progress.chunks_done, progress.output_bytes, progress.input_bytes]
    consistent = min(counts) >= 0 and (
        (progress.chunks_done - 1) * chunk_size < progress.questions_done <= progress.chunks_done * chunk_size
        if progress.chunks_done
        else progress.questions_done == 0 and not progress.complete
    )
    if not consistent or (progress.chunks_done > 0) != (progress.input_digest is not None):
        raise refuse(
            f"its counts do not agree ({progress.questions_done} questions in {progress.chunks_done} chunks of "
            f"{chunk_size})"
        )
    return progress


def prefix_digest(handle: BinaryIO, size: int) -> tuple[Any, int]:
    """sha256 (the hash object, to go on with) and line count of the first ``size`` bytes of an open file,
    read a block at a time: an output of any size is checked in bounded memory."""
    digest, lines, left = hashlib.sha256(), 0, size
    handle.seek(0)
    while left > 0:
        block = handle.read(min(_HASH_BLOCK, left))
        if not block:
            break
        digest.update(block)
        lines += block.count(b"\n")
        left -= len(block)
    return digest, lines


def is_stream(path: Path) -> bool:
    """A character device, a pipe or a FIFO: written as it comes, with no record to resume from."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def check_output_path(output: Path, source: str, resume: bool, overwrite: bool) -> None:
    """Refuse, before the model loads, an --output that cannot be written as asked: the input itself (or a
    link to it), a directory, a missing directory, an existing file without --resume or --overwrite, a
    stream with --resume."""
    same = output.exists() and Path(source).exists() and os.path.samefile(output, source)
    if source != "-" and (same or Path(source).resolve() == output.resolve()):
        raise QAError(f"--output {output}: is the input file {source}; the answers go to another file")
    if output.is_dir():
        raise QAError(f"--output {output}: is a directory")
    if not output.parent.is_dir():
        raise QAError(f"--output {output}: no such directory {output.parent}")
    if is_stream(output):
        if resume:
            raise QAError(
                f"--resume: {output} is a device, pipe or FIFO, written as a stream with no record to resume from"
            )
        return
    if output.exists() and not output.is_file():
        raise QAError(f"--output {output}: not a regular file, a device, a pipe or a FIFO")
    if not resume and output.exists() and not overwrite:
        raise QAError(f"--output {output}: exists; --resume continues the run that wrote it, --overwrite replaces it")
    if resume and not output.exists():
        raise QAError(f"--resume: {output} does not exist; run without --resume to start")


class OutputLock:
    """One writer per output: an exclusive ``flock`` on ``.NAME.lock`` beside it, held for the run (the OS
    drops it if the process dies; the file is removed when the run ends). A second run is refused in one
    line naming the first."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(f".{output.name}.lock")
        try:
            self.descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise QAError(f"--output {output}: cannot write beside it ({error.strerror})") from None
        try:
            fcntl.flock(self.descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.descriptor, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(self.descriptor)
            raise QAError(f"--output {output}: another run ({holder}) is writing it") from None
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, _me().encode(), 0)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # still held: no other run can have taken it meanwhile
        os.close(self.descriptor)


def input_tally(stream: BinaryIO) -> tuple[int, str]:
    """Bytes and sha256 of a whole input."""
    digest, size = hashlib.sha256(), 0
    for block in iter(lambda: stream.read(_HASH_BLOCK), b""):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


def check_resumable(output: Path, progress: Progress) -> None:
    """The output holds exactly what the record says it wrote: at least its length, the same bytes there,
    one line per question done."""
    with output.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < progress.output_bytes:
            raise QAError(f"--resume: {output} is shorter than its progress record says: start again with --overwrite")
        digest, lines = prefix_digest(handle, progress.output_bytes)
    if digest.hexdigest() != progress.output_digest or lines != progress.questions_done:
        raise QAError(
            f"--resume: {output} changed since the run wrote it (its first {progress.output_bytes} bytes differ from "
            "the record); start again with --overwrite"
        )


class Sink:
    """Rank 0's writer: standard output, a stream (device, pipe, FIFO), or an --output file with its
    progress record (each chunk appended, flushed and synced before the record says so)."""

    def __init__(self, output: Path | None, progress: Progress, recorded: bool) -> None:
        self.progress = progress
        self.recorded = recorded
        self.file = None
        self.digest = hashlib.sha256()
        if output is None:
            return
        if recorded:
            with output.open("rb") as handle:  # the output as resumed (cut back to what the record holds)
                self.digest, _ = prefix_digest(handle, progress.output_bytes)
        try:
            self.file = (output, output.open("ab" if recorded else "wb"))
        except OSError as error:
            raise QAError(f"--output {output}: cannot open it for writing ({error.strerror})") from None

    def write(self, chunk: Any, lines: list[str] | None) -> None:
        text = "".join(lines or [])
        if self.file is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        output, handle = self.file
        data = text.encode("utf-8")
        try:
            handle.write(data)
            handle.flush()
            if self.recorded:
                os.fsync(handle.fileno())  # on disk before the progress record says so
        except OSError as error:
            raise QAError(f"--output {output}: cannot write ({error.strerror})") from None
        if not self.recorded:
            return
        self.digest.update(data)
        self.progress.questions_done += len(chunk.questions)
        self.progress.chunks_done = chunk.index + 1
        self.progress.output_bytes += len(data)
        self.progress.output_digest = self.digest.hexdigest()
        self.progress.input_bytes = chunk.bytes_read
        self.progress.input_digest = chunk.digest
        write_json(progress_path(output), asdict(self.progress))

    def finish(self, whole_input: tuple[int, str]) -> None:
        """The record says complete, bound to the whole input as read (bytes and hash)."""
        if self.file is None:
            return
        output, handle = self.file
        try:
            handle.close()
        except OSError as error:
            raise QAError(f"--output {output}: cannot write ({error.strerror})") from None
        if self.recorded:
            self.progress.complete = True
            self.progress.input_bytes, self.progress.input_digest = whole_input
            write_json(progress_path(output), asdict(self.progress))
