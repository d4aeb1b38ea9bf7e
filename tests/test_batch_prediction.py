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
write = streaming._Sink.write

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

streaming._Sink.write = write_then_park
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


def test_resume_is_refused_on_another_input_or_other_settings(arranged_model_dir, tmp_path, capsys):
    data = questions_file(tmp_path / "in.jsonl", 9)
    out = tmp_path / "answers.jsonl"
    common = ["--output", str(out), "--chunk-size", "4"]
    run(arranged_model_dir, str(data), *common, capsys=capsys)
    progress = out.with_name(f".{out.name}.progress.json")
    record = json.loads(progress.read_text())
    record.update(complete=False, questions_done=4, chunks_done=1)  # as if killed after the first chunk
    lines = out.read_text().splitlines(keepends=True)
    record["output_bytes"] = len("".join(lines[:4]).encode())
    record["input_digest"] = json.loads(progress.read_text())["input_digest"]  # of all 9: not the first 4
    progress.write_text(json.dumps(record))
    with pytest.raises(SystemExit):
        run(arranged_model_dir, str(data), *common, "--resume")
    assert "the input's first 4 questions differ from those of the run being resumed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(arranged_model_dir, str(data), *common, "--resume", "--top-k", "3")
    assert "--resume: top_k 3 (the run began with 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(arranged_model_dir, str(data), "--output", str(out), "--chunk-size", "5", "--resume")
    assert "chunk_size 5 (the run began with 4)" in capsys.readouterr().err


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
