"""predict.py --input at any size: chunks, --output, --resume after a kill, standard input, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT, torchrun

from qa.commands import predict as predict_cmd

CONTEXTS = [
    "In 2016 the Denver Broncos won the super bowl.",
    "The people played music in the church. The denver team and the broncos played.",
    "Paris is a city of music and the broncos were not there.",
]
WINDOWS = ["--max-length", "32", "--stride", "8"]


def questions_file(path: Path, count: int, blank_every: int = 7) -> Path:
    """``count`` questions (a blank line now and then, which is skipped and keeps line numbering)."""
    lines = []
    for index in range(count):
        if index % blank_every == 3:
            lines.append("")
        record = {"question": f"Who won {index}?", "context": CONTEXTS[index % 3]}
        if index % 5 == 0:
            record["top_k"] = 2
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def run(model: Path, source: str, *extra: str, capsys=None) -> str:
    predict_cmd.main(["--ckpt", str(model), "--input", source, *WINDOWS, "--no-progress", *extra])
    return capsys.readouterr().out if capsys is not None else ""


def test_chunk_boundaries_give_the_records_of_one_whole_chunk(arranged_model_dir, tmp_path, capsys):
    for count in (3, 4, 5, 8):  # one below, at and above a chunk of 4, and two chunks
        data = questions_file(tmp_path / f"in{count}.jsonl", count)
        whole = run(arranged_model_dir, str(data), "--chunk-size", "1000", capsys=capsys)
        chunked = run(arranged_model_dir, str(data), "--chunk-size", "4", capsys=capsys)
        records = [json.loads(line) for line in chunked.splitlines()]
        assert chunked == whole and len(records) == count
        assert [record["id"] for record in records][:4] == ["1", "2", "3", "5"][: min(count, 4)]  # line numbers


def test_output_is_written_refused_when_it_exists_and_replaced_with_overwrite(arranged_model_dir, tmp_path, capsys):
    data = questions_file(tmp_path / "in.jsonl", 9)
    expected = run(arranged_model_dir, str(data), capsys=capsys)
    out = tmp_path / "answers.jsonl"
    assert run(arranged_model_dir, str(data), "--output", str(out), "--chunk-size", "4", capsys=capsys) == ""
    assert out.read_text() == expected
    with pytest.raises(SystemExit) as refused:
        run(arranged_model_dir, str(data), "--output", str(out))
    assert refused.value.code == 2
    assert "exists; --resume continues the run that wrote it, --overwrite replaces it" in capsys.readouterr().err
    out.write_text("old\n")
    run(arranged_model_dir, str(data), "--output", str(out), "--overwrite", capsys=capsys)
    assert out.read_text() == expected
    run(arranged_model_dir, str(data), "--output", str(out), "--resume")  # complete: nothing to do
    assert out.read_text() == expected and "already complete (9 questions)" in capsys.readouterr().err


@pytest.mark.slow
def test_standard_input_is_read_as_a_stream(arranged_model_dir, tmp_path, capsys):
    data = questions_file(tmp_path / "in.jsonl", 6)
    expected = run(arranged_model_dir, str(data), capsys=capsys)
    result = subprocess.run(
        [sys.executable, "predict.py", "--ckpt", str(arranged_model_dir), "--input", "-", *WINDOWS]
        + ["--chunk-size", "4", "--no-progress"],
        cwd=REPO_ROOT,
        input=data.read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.decode() == expected


# predict.py in a child that parks itself (waits for a signal) right after chunk CHUNK is on disk with its
# progress record, or, with MID, after writing half of chunk CHUNK's bytes and before its record: so that a
# SIGKILL lands at a known point.
PARK_AFTER_CHUNK = """
import os, signal, sys
import qa.eval.streaming as streaming
from qa.commands import predict as predict_cmd

chunk_to_park, middle = int(sys.argv[1]), sys.argv[2] == "mid"
write = streaming.Sink.write

def write_then_park(self, chunk, lines):
    if middle and chunk.index == chunk_to_park:
        data = "".join(lines).encode()
        _, handle = self.file
        handle.write(data[: len(data) // 2])
        handle.flush()
        print("parked", flush=True)
        signal.pause()
    write(self, chunk, lines)
    if not middle and chunk.index == chunk_to_park:
        print("parked", flush=True)
        signal.pause()

streaming.Sink.write = write_then_park
predict_cmd.main(sys.argv[3:])
"""


@pytest.mark.slow
@pytest.mark.parametrize(("chunk", "where"), [(0, "after"), (1, "mid"), (2, "after"), (0, "mid")])
def test_a_killed_run_leaves_whole_chunks_and_resume_completes_it_to_the_records_of_an_uninterrupted_run(
    arranged_model_dir, tmp_path, capsys, chunk, where
):
    data = questions_file(tmp_path / "in.jsonl", 14)
    expected = run(arranged_model_dir, str(data), capsys=capsys)
    out = tmp_path / "answers.jsonl"
    argv = ["--ckpt", str(arranged_model_dir), "--input", str(data), *WINDOWS, "--no-progress", "--chunk-size", "4"]
    argv += ["--output", str(out)]
    child = subprocess.Popen(
        [sys.executable, "-c", PARK_AFTER_CHUNK, str(chunk), where, *argv],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "parked", child.stderr.read()[-2000:]
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    written = out.read_text()
    whole_chunks = chunk + (1 if where == "after" else 0)
    lines_done = 4 * whole_chunks
    if where == "after":
        assert written == "".join(expected.splitlines(keepends=True)[:lines_done])  # only whole lines
    run(arranged_model_dir, str(data), "--output", str(out), "--chunk-size", "4", "--resume", capsys=capsys)
    assert out.read_text() == expected


def as_if_killed_after_the_first_chunk(out: Path, data: Path | None = None) -> tuple[Path, dict]:
    """The record of a finished run of 9 questions in chunks of 4, put back to its first chunk as a kill
    after it leaves it: the output's bytes and hash of that chunk and, given ``data``, the input's through
    its 4th question (else the whole input's, as the finished run recorded)."""
    import hashlib

    progress = out.with_name(f".{out.name}.progress.json")
    record = json.loads(progress.read_text())
    head = "".join(out.read_text().splitlines(keepends=True)[:4]).encode()
    record.update(complete=False, questions_done=4, chunks_done=1, output_bytes=len(head))
    record["output_digest"] = hashlib.sha256(head).hexdigest()
    if data is not None:
        read, questions = b"", 0
        for line in data.read_bytes().splitlines(keepends=True):
            if questions == 4:
                break
            read += line
            questions += bool(line.strip())
        record.update(input_bytes=len(read), input_digest=hashlib.sha256(read).hexdigest())
    return progress, record


def test_resume_is_refused_on_another_input_or_other_settings(arranged_model_dir, tmp_path, capsys):
    data = questions_file(tmp_path / "in.jsonl", 9)
    out = tmp_path / "answers.jsonl"
    common = ["--output", str(out), "--chunk-size", "4"]
    run(arranged_model_dir, str(data), *common, capsys=capsys)
    progress, record = as_if_killed_after_the_first_chunk(out)
    progress.write_text(json.dumps(record))  # its input digest is still the whole file's: not the first 4's
    with pytest.raises(SystemExit):
        run(arranged_model_dir, str(data), *common, "--resume")
    assert "--resume: the input changed since the run began (its first 4 questions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(arranged_model_dir, str(data), *common, "--resume", "--top-k", "3")
    assert "--resume: --top-k 3 (the run began with 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(arranged_model_dir, str(data), "--output", str(out), "--chunk-size", "5", "--resume")
    assert "--chunk-size 5 (the run began with 4)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(arranged_model_dir, str(data), *common, "--resume", "--max-length", "40")
    assert "--resume: --max-length 40 (the run began with 32)" in capsys.readouterr().err


def refusal(capsys, model, *argv) -> str:
    with pytest.raises(SystemExit) as refused:
        run(model, *argv)
    captured = capsys.readouterr()
    assert refused.value.code == 2 and "Traceback" not in captured.err
    return captured.err.strip().splitlines()[-1].removeprefix("error: ")


@pytest.mark.parametrize("change", ["appended", "edited", "shortened", "blank line added"])
def test_a_finished_run_is_not_called_complete_for_an_input_that_changed(arranged_model_dir, tmp_path, capsys, change):
    data = questions_file(tmp_path / "in.jsonl", 9)
    out = tmp_path / "answers.jsonl"
    common = ["--output", str(out), "--chunk-size", "4"]
    run(arranged_model_dir, str(data), *common, capsys=capsys)
    answered = out.read_text()
    lines = data.read_text().splitlines(keepends=True)
    changed = {
        "appended": lines + [json.dumps({"question": "Who lost?", "context": CONTEXTS[0]}) + "\n"],
        "edited": lines[:2] + [lines[2].replace("Who won", "Who lost")] + lines[3:],
        "shortened": lines[:-2],
        "blank line added": lines + ["\n"],
    }[change]
    data.write_text("".join(changed))
    line = refusal(capsys, arranged_model_dir, str(data), *common, "--resume")
    assert line == (
        f"--resume: the input changed since the run began ({data} is not the input {out} answers): --overwrite to "
        "start again"
    )
    assert out.read_text() == answered  # nothing touched


def test_resume_refuses_an_output_or_a_record_that_was_edited(arranged_model_dir, tmp_path, capsys):
    data = questions_file(tmp_path / "in.jsonl", 9)
    out = tmp_path / "answers.jsonl"
    common = ["--output", str(out), "--chunk-size", "4"]
    run(arranged_model_dir, str(data), *common, capsys=capsys)
    progress, record = as_if_killed_after_the_first_chunk(out, data)
    kept = out.read_bytes()
    out.write_bytes(kept.replace(b"Denver", b"Denvex", 1))  # one answer of the first chunk edited
    progress.write_text(json.dumps(record))
    assert "changed since the run wrote it" in refusal(capsys, arranged_model_dir, str(data), *common, "--resume")
    out.write_bytes(kept)
    edits = [
        ({"questions_done": "4"}, "field 'questions_done' is missing or of the wrong type"),
        ({"complete": 1}, "field 'complete' is missing or of the wrong type"),
        ({"version": 1}, "a progress record of version 1, not 2"),
        ({"questions_done": 5}, "its counts do not agree (5 questions in 1 chunks of 4)"),
        ({"questions_done": 9, "complete": True}, "its counts do not agree (9 questions in 1 chunks of 4)"),
        ({"extra": True}, "unknown field 'extra'"),
    ]
    for edit, why in edits:
        progress.write_text(json.dumps({**record, **edit}))
        line = refusal(capsys, arranged_model_dir, str(data), *common, "--resume")
        assert line == f"--resume: {progress}: {why}; start again with --overwrite", edit
    progress.write_text("{not json")
    assert str(progress) in refusal(capsys, arranged_model_dir, str(data), *common, "--resume")
    progress.write_text(json.dumps(record))  # the record as it was: the resume completes the run
    run(arranged_model_dir, str(data), *common, "--resume", capsys=capsys)
    assert out.read_bytes() == kept and json.loads(progress.read_text())["complete"] is True


def test_the_output_is_never_the_input_and_has_one_writer(arranged_model_dir, tmp_path, capsys):
    from qa.eval.stream_output import OutputLock

    data = questions_file(tmp_path / "in.jsonl", 5)
    before = data.read_text()
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    for target in (data, link):
        for flag in ("--overwrite", "--resume"):
            line = refusal(capsys, arranged_model_dir, str(data), "--output", str(target), flag)
            assert line == f"--output {target}: is the input file {data}; the answers go to another file"
    assert data.read_text() == before and not list(tmp_path.glob(".*"))
    out = tmp_path / "answers.jsonl"
    first = OutputLock(out)  # another run, writing it now
    try:
        line = refusal(capsys, arranged_model_dir, str(data), "--output", str(out))
        assert line == f"--output {out}: another run (pid {os.getpid()} on {os.uname().nodename}) is writing it"
        assert "another run" in refusal(capsys, arranged_model_dir, str(data), "--output", str(out), "--overwrite")
    finally:
        first.release()
    run(arranged_model_dir, str(data), "--output", str(out), capsys=capsys)
    assert len(out.read_text().splitlines()) == 5 and not (tmp_path / ".answers.jsonl.lock").exists()


def test_devices_and_fifos_are_written_as_streams_without_a_record(arranged_model_dir, tmp_path, capsys):
    import threading

    data = questions_file(tmp_path / "in.jsonl", 6)
    expected = run(arranged_model_dir, str(data), capsys=capsys)
    run(arranged_model_dir, str(data), "--output", os.devnull, "--chunk-size", "4", capsys=capsys)
    assert not Path("/dev/.null.progress.json").exists() and not Path("/dev/.null.lock").exists()
    line = refusal(capsys, arranged_model_dir, str(data), "--output", os.devnull, "--resume")
    assert (
        line == f"--resume: {os.devnull} is a device, pipe or FIFO, written as a stream with no record to resume from"
    )
    fifo = tmp_path / "answers.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    run(arranged_model_dir, str(data), "--output", str(fifo), "--chunk-size", "4", capsys=capsys)
    reader.join(timeout=60)
    assert received == [expected]
    full = refusal(capsys, arranged_model_dir, str(data), "--output", "/dev/full")
    assert full == "--output /dev/full: cannot write (No space left on device)"
    assert "is a directory" in refusal(capsys, arranged_model_dir, str(tmp_path))


def test_a_bad_line_of_a_file_is_refused_before_any_output(arranged_model_dir, tmp_path, capsys):
    data = questions_file(tmp_path / "in.jsonl", 9)
    data.write_text(data.read_text() + '{"question": "Who?"}\n')
    with pytest.raises(SystemExit) as refused:
        run(arranged_model_dir, str(data), "--chunk-size", "2")
    captured = capsys.readouterr()
    assert refused.value.code == 2 and captured.out == ""
    assert captured.err.strip().endswith("in.jsonl: line 11, field 'context' is missing")  # after a blank line


def test_progress_shows_on_standard_error(arranged_model_dir, tmp_path, capsys):
    data = questions_file(tmp_path / "in.jsonl", 9)
    predict_cmd.main(["--ckpt", str(arranged_model_dir), "--input", str(data), *WINDOWS, "--chunk-size", "4"])
    captured = capsys.readouterr()
    assert "answering" in captured.err and "9/9" in captured.err and "answering" not in captured.out


@pytest.mark.slow
def test_torchrun_with_two_processes_writes_the_records_of_one(arranged_model_dir, tmp_path, capsys):
    data = questions_file(tmp_path / "in.jsonl", 11)
    expected = run(arranged_model_dir, str(data), capsys=capsys)
    out = tmp_path / "answers.jsonl"
    result = torchrun(
        "predict.py",
        *("--ckpt", str(arranged_model_dir), "--input", str(data), *WINDOWS, "--chunk-size", "2", "--no-progress"),
        *("--output", str(out)),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_text() == expected


@pytest.mark.slow
def test_torchrun_fails_in_one_line_on_a_full_disk_and_refuses_standard_input(
    arranged_model_dir, tmp_path, capsys, monkeypatch
):
    data = questions_file(tmp_path / "in.jsonl", 6)
    common = ("--ckpt", str(arranged_model_dir), *WINDOWS, "--chunk-size", "2", "--no-progress")
    full = torchrun("predict.py", *common, "--input", str(data), "--output", "/dev/full")
    errors = [line for line in full.stderr.splitlines() if "No space left" in line]
    # torchrun's own launcher reports a failed child with a traceback of its own; none comes from qa/
    assert full.returncode != 0 and f'File "{REPO_ROOT / "qa"}' not in full.stderr, full.stderr[-3000:]
    assert errors and all(
        line == "error: --output /dev/full: cannot write (No space left on device)" for line in errors
    )
    # Standard input is refused by every rank before the process group starts: torchrun's environment suffices.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert "torchrun's processes cannot share standard input" in refusal(capsys, arranged_model_dir, "-")


def test_input_from_a_named_pipe_is_read_as_a_stream(arranged_model_dir, tmp_path, capsys):
    import threading

    data = questions_file(tmp_path / "in.jsonl", 6)
    expected = run(arranged_model_dir, str(data), capsys=capsys)
    fifo = tmp_path / "questions.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(data.read_bytes()))
    writer.start()
    assert run(arranged_model_dir, str(fifo), "--chunk-size", "4", capsys=capsys) == expected
    writer.join(timeout=60)


def test_a_hand_edited_stored_threshold_is_refused_in_one_line(arranged_model_dir, tmp_path, capsys):
    import shutil

    from qa.model.carried import store_carried

    model = tmp_path / "model"
    shutil.copytree(arranged_model_dir, model)
    data = questions_file(tmp_path / "in.jsonl", 2)
    for edited in ("-1.5", True, float("inf"), [1]):
        store_carried(model, null_threshold=edited)
        line = refusal(capsys, model, str(data))
        assert line.startswith(f"config.json qa_null_threshold: {edited!r} is not a finite number"), line
    run(model, str(data), "--null-threshold", "0", capsys=capsys)  # overridden: answers


def test_the_progress_bar_moves_with_the_questions_of_a_chunk_not_once_per_chunk(
    arranged_model_dir, tmp_path, capsys, monkeypatch
):
    import qa.eval.streaming as streaming

    updates = []

    class Recorder:
        def update(self, count):
            updates.append(count)

        def close(self):
            pass

    monkeypatch.setattr(streaming, "_progress_bar", lambda *args: Recorder())
    data = questions_file(tmp_path / "in.jsonl", 12)
    run(arranged_model_dir, str(data), "--chunk-size", "1000", "--batch-size", "1", capsys=capsys)
    assert sum(updates) == 12 and len(updates) >= 6 and all(count > 0 for count in updates), updates


def test_every_refusal_about_the_output_comes_before_the_model_loads(arranged_model_dir, tmp_path, capsys, monkeypatch):
    import qa.eval.answering as answering
    from qa.eval.stream_output import OutputLock

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(answering, "load_reader", no_model)
    data = questions_file(tmp_path / "in.jsonl", 3)
    existing = tmp_path / "existing.jsonl"
    existing.write_text("")
    locked = tmp_path / "locked.jsonl"
    holder = OutputLock(locked)
    try:
        cases = [
            (["--output", str(existing)], "exists; --resume continues"),
            (["--output", str(tmp_path / "missing.jsonl"), "--resume"], "does not exist; run without --resume"),
            (["--output", str(tmp_path / "no" / "dir.jsonl")], "no such directory"),
            (["--output", str(tmp_path)], "is a directory"),
            (["--output", str(data), "--overwrite"], "is the input file"),
            (["--output", os.devnull, "--resume"], "written as a stream with no record"),
            (["--output", str(locked)], "another run"),
        ]
        for flags, why in cases:
            assert why in refusal(capsys, arranged_model_dir, str(data), *flags), flags
    finally:
        holder.release()
