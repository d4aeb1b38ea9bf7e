"""Ways real users and machines break the tools: each must end in a right answer or one clear line."""

import errno
import io
import json
import shutil
import subprocess
import sys
import types

import pytest
import torch
from helpers import REPO_ROOT, tiny_train_argv, write_squad_json
from safetensors.torch import load_file, save_file

from qa.commands import evaluate as evaluate_cmd
from qa.commands import predict as predict_cmd
from qa.commands import train as train_cmd
from qa.data.loading import load_examples
from qa.errors import QAError
from qa.hub import hub_unreachable
from qa.model.loading import load_qa_model, load_tokenizer
from qa.train import checkpoint

CONTEXT = "In 2016 the Denver Broncos won the super bowl."


def one_line_error(capsys, main, argv, *fragments, code=2):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == code, err
    # train.py reports its plan first; the error is the one last line
    assert "Traceback" not in err and err.count("error:") == 1 and err.endswith("\n"), err
    last = err.splitlines()[-1]
    assert last.startswith("error:"), err
    for fragment in fragments:
        assert fragment in last, err
    return last


def copy_model(source, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


# ---------------------------------------------------------------- silent wrong results


def test_every_input_line_gets_its_own_answer_under_its_own_id(arranged_model_dir, tmp_path, capsys):
    contexts = [
        CONTEXT,
        "Denver and the Broncos played.",
        "Go denver go broncos.",
        "Denver, the city of the Broncos.",
        CONTEXT,
    ]
    ids = ["2", None, None, "a", "a"]  # line 2's default id "2" equals line 1's id; "a" repeats
    lines = []
    for given, context in zip(ids, contexts):
        record = {"question": "Who won?", "context": context}
        if given is not None or len(lines) == 2:
            record["id"] = given  # line 3 carries an explicit null
        lines.append(json.dumps(record))
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    predict_cmd.main(["--ckpt", str(arranged_model_dir), "--input", str(path), "--max-length", "64", "--stride", "16"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["id"] for row in out] == ["2", "2", "3", "a", "a"]
    assert [row["answer"] for row in out] == [
        "Denver Broncos",
        "Denver and the Broncos",
        "denver go broncos",
        "Denver, the city of the Broncos",
        "Denver Broncos",
    ]
    path.write_text(json.dumps({"id": {"x": 1}, "question": "q", "context": "c"}) + "\n")
    one_line_error(capsys, predict_cmd.main, ["--ckpt", str(arranged_model_dir), "--input", str(path)], "line 1", "id")


def test_checkpoint_without_tokenizer_files_is_refused(arranged_model_dir, tmp_path, capsys):
    broken = copy_model(arranged_model_dir, tmp_path)
    for name in ("tokenizer.json", "vocab.txt"):
        (broken / name).unlink(missing_ok=True)
    argv = ["--ckpt", str(broken), "--question", "Who?", "--context", CONTEXT]
    one_line_error(capsys, predict_cmd.main, argv, "no tokenizer files")


def test_qa_model_without_its_head_weights_is_refused(arranged_model_dir, tmp_path, capsys):
    broken = copy_model(arranged_model_dir, tmp_path)
    weights = load_file(str(broken / "model.safetensors"))
    save_file(
        {name: value for name, value in weights.items() if not name.startswith("qa_outputs")},
        broken / "model.safetensors",
    )
    argv = ["--ckpt", str(broken), "--question", "Who?", "--context", CONTEXT]
    one_line_error(capsys, predict_cmd.main, argv, "qa_outputs", "incomplete")


def test_truncated_weights_are_one_line(arranged_model_dir, tmp_path, capsys):
    broken = copy_model(arranged_model_dir, tmp_path)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    argv = ["--ckpt", str(broken), "--question", "Who?", "--context", CONTEXT]
    one_line_error(capsys, predict_cmd.main, argv, "cannot load the model weights")


def train_args(model, data, out, tmp_path, *extra):
    return tiny_train_argv(model, out, tmp_path / "cache", "--batch-size", "2", *extra, train_file=data)


@pytest.fixture
def data_file(tmp_path):
    return write_squad_json(tmp_path / "train.json")


@pytest.mark.slow
def test_a_second_run_into_a_trained_directory_is_refused_unless_told(tiny_model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = train_args(tiny_model_dir, data_file, out, tmp_path, "--max-steps", "2", "--log-steps", "1")
    train_cmd.main(args)
    (out / "metrics.json").write_text("{}")  # as an evaluation of the first run would leave
    one_line_error(capsys, train_cmd.main, args, "already holds", "--overwrite-output-dir", "--resume")
    train_cmd.main([*args, "--overwrite-output-dir"])
    assert not (out / "metrics.json").exists()  # really started clean
    assert [row["step"] for row in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())] == [1, 2]


def test_second_train_py_on_the_same_directory_stops_and_names_the_holder(tiny_model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "out"
    args = train_args(tiny_model_dir, data_file, out, tmp_path, "--max-steps", "1")
    with checkpoint.output_dir_lock(out):
        one_line_error(capsys, train_cmd.main, args, "in use by another train.py", "pid")
    # A holder that did no work leaves nothing; one that was killed leaves its lock file, which does not block.
    assert not out.exists()
    out.mkdir()
    (out / checkpoint.LOCK_FILE).write_text("pid 1 on a machine that was killed")
    assert train_cmd.main(args)["steps"] == 1


def test_pruning_never_leaves_a_checkpoint_that_looks_complete_but_is_not(tmp_path, monkeypatch):
    for step in (1, 2, 3):
        directory = tmp_path / f"checkpoint-{step}"
        directory.mkdir()
        for name in ("model.safetensors", "tokenizer.json", checkpoint.STATE_FILE):
            (directory / name).write_text("x")
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        if path.exists():
            (path / "model.safetensors").unlink(missing_ok=True)  # some files gone, then the kill
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.prune_checkpoints(tmp_path, keep=1)
    for directory in tmp_path.glob("checkpoint-*"):
        assert (directory / "model.safetensors").is_file(), directory.name
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    checkpoint.remove_leftovers(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_a_kill_during_the_final_save_never_mixes_two_models(tiny_model_dir, tmp_path, monkeypatch):
    model = load_qa_model(str(tiny_model_dir), require_qa_head=True)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    out = tmp_path / "out"
    out.mkdir()
    checkpoint.save_final_model(out, model, tokenizer, {"run": 1})
    real_replace = checkpoint.os.replace
    calls = []

    def killed_after_two(source, target):
        calls.append(target)
        if len(calls) > 2:
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(checkpoint.os, "replace", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_final_model(out, model, tokenizer, {"run": 2})
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    # Either the old model whole or nothing that loads: here, no config.json, so nothing loads.
    assert not (out / "config.json").exists()
    with pytest.raises(QAError, match="no config.json"):
        load_qa_model(str(out), require_qa_head=True)
    assert not (out / ".final.tmp").exists()


def test_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_good_one(
    tiny_model_dir, data_file, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    real_save = torch.save
    saves = []

    def disk_fills_up(obj, target, *args, **kwargs):
        saves.append(target)
        if len(saves) >= 2:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos") from OSError(
                errno.ENOSPC, "No space left on device"
            )
        return real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", disk_fills_up)
    args = train_args(tiny_model_dir, data_file, out, tmp_path, "--max-steps", "3", "--save-steps", "1")
    one_line_error(capsys, train_cmd.main, args, "no space left", "checkpoint-1")
    assert sorted(path.name for path in out.glob("*checkpoint*")) == ["checkpoint-1"]  # no temporary left
    assert load_qa_model(str(out / "checkpoint-1"), require_qa_head=True) is not None


@pytest.mark.slow
def test_truncated_feature_cache_is_a_miss(tiny_model_dir, data_file, tmp_path, capsys):
    args = train_args(tiny_model_dir, data_file, tmp_path / "a", tmp_path, "--max-steps", "1")
    train_cmd.main(args)
    (cache_file,) = (tmp_path / "cache").glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    args[args.index(str(tmp_path / "a"))] = str(tmp_path / "b")
    assert train_cmd.main(args)["steps"] == 1
    assert "unreadable feature cache" in capsys.readouterr().err
    assert cache_file.stat().st_size > 100  # rebuilt


def test_training_state_without_its_keys_is_one_line(tiny_model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "out"
    fake = copy_model(tiny_model_dir, tmp_path, "checkpoint-fake")
    torch.save({"optimizer": {}}, fake / checkpoint.STATE_FILE)
    args = train_args(tiny_model_dir, data_file, out, tmp_path, "--max-steps", "1", "--resume", str(fake))
    one_line_error(capsys, train_cmd.main, args, "missing", "scheduler")


# ---------------------------------------------------------------- one line, never a traceback


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_max_length_beyond_the_models_positions_is_refused_before_any_work(command, tiny_model_dir, tmp_path, capsys):
    window = ["--max-length", "1024", "--stride", "128"]
    argv = {
        "train": ["--model", str(tiny_model_dir), "--train-file", __file__, "--output-dir", str(tmp_path / "o")],
        "evaluate": ["--ckpt", str(tiny_model_dir), "--validation-file", "/nonexistent.json"][:2],
        "predict": ["--ckpt", str(tiny_model_dir), "--question", "q", "--context", "c"],
    }[command]
    main = {"train": train_cmd.main, "evaluate": evaluate_cmd.main, "predict": predict_cmd.main}[command]
    one_line_error(capsys, main, [*argv, *window], "--max-length 1024", "512 positions")


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
def test_non_utf8_data_files_are_one_line(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(b'{"id": "a", "question": "caf\xe9?"}\n')
    with pytest.raises(QAError, match="not UTF-8"):
        load_examples(file=path, for_training=False)


def test_answer_start_past_the_context_is_one_line(tmp_path):
    articles = [
        {
            "paragraphs": [
                {
                    "context": "Paris.",
                    "qas": [{"id": "x", "question": "q", "answers": [{"text": "Paris", "answer_start": 10**30}]}],
                }
            ]
        }
    ]
    with pytest.raises(QAError, match="'x'.*answer_start.*past the end"):
        load_examples(file=write_squad_json(tmp_path / "d.json", articles), for_training=False)


def test_standard_input_that_is_closed_or_not_utf8(arranged_model_dir, capsys, monkeypatch):
    argv = ["--ckpt", str(arranged_model_dir), "--question", "Who?", "--context-file", "-"]
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(closed=False, buffer=io.BytesIO(b"caf\xe9")))
    one_line_error(capsys, predict_cmd.main, argv, "not UTF-8")
    monkeypatch.setattr(sys, "stdin", None)
    one_line_error(capsys, predict_cmd.main, argv, "closed")


@pytest.mark.slow
def test_output_into_a_closed_pipe_ends_quietly(arranged_model_dir):
    process = subprocess.Popen(
        [sys.executable, "predict.py", "--ckpt", str(arranged_model_dir), "--question", "Who?", "--context", CONTEXT],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # the reader is gone before anything is printed, as `| head -0`
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and "Traceback" not in stderr and "BrokenPipe" not in stderr


def test_ctrl_c_during_evaluation_is_one_line_with_status_130(arranged_model_dir, tmp_path, capsys, monkeypatch):
    import qa.eval.evaluator

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(qa.eval.evaluator, "evaluate_examples", interrupted)
    data = write_squad_json(tmp_path / "dev.json")
    argv = ["--ckpt", str(arranged_model_dir), "--validation-file", str(data), "--output-dir", str(tmp_path / "e")]
    one_line_error(capsys, evaluate_cmd.main, argv, "interrupted", code=130)


def test_unwritable_output_dir_is_refused_before_inference(arranged_model_dir, tmp_path, capsys, monkeypatch):
    import qa.eval.evaluator

    def must_not_run(*args, **kwargs):
        raise AssertionError("inference ran before the output directory was checked")

    monkeypatch.setattr(qa.eval.evaluator, "evaluate_examples", must_not_run)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    data = write_squad_json(tmp_path / "dev.json")
    argv = ["--ckpt", str(arranged_model_dir), "--validation-file", str(data), "--output-dir", str(blocker / "sub")]
    one_line_error(capsys, evaluate_cmd.main, argv, "--output-dir", "cannot write")


# ---------------------------------------------------------------- messages that mislead


def test_unreachable_hub_fails_fast_with_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a closed local port: refused at once
    hub_unreachable.cache_clear()
    try:
        argv = ["--ckpt", "someone/some-model", "--question", "q", "--context", "c"]
        one_line_error(capsys, predict_cmd.main, argv, "hub is unreachable", "127.0.0.1:9")
    finally:
        hub_unreachable.cache_clear()


def test_checkpoint_typos_and_the_missing_default_say_what_is_wrong(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, evaluate_cmd.main, [], "no checkpoint at ./finetuned-squad", "train.py")
    one_line_error(capsys, evaluate_cmd.main, ["--ckpt", "./out-typo"], "out-typo: no such model directory")


# ---------------------------------------------------------------- a failed start leaves nothing behind


@pytest.mark.parametrize(
    "extra",
    [
        ("--model", "not-a-hub-model-here"),  # offline: the hub is not reached (HF_HUB_OFFLINE in the suite)
        ("--student-layers", "9"),  # more layers than the model has
        ("--teacher", "no-such-teacher"),
    ],
)
def test_a_train_run_that_fails_before_doing_work_leaves_no_directory_and_no_lock(
    tiny_model_dir, tmp_path, capsys, extra
):
    data = write_squad_json(tmp_path / "train.json")
    out = tmp_path / "finetuned"
    argv = ["--model", str(tiny_model_dir), "--train-file", str(data), "--output-dir", str(out), *extra]
    with pytest.raises(SystemExit) as caught:
        train_cmd.main([*argv, "--no-progress", "--cache-dir", str(tmp_path / "cache")])
    assert caught.value.code == 2 and not out.exists()
    err = capsys.readouterr().err
    if extra[0] == "--model":
        assert err.startswith("error: --model not-a-hub-model-here:"), err
    existing = tmp_path / "mine"
    existing.mkdir()
    (existing / "notes.txt").write_text("the user's")
    with pytest.raises(SystemExit):
        train_cmd.main([*argv[:-2], "--output-dir", str(existing), *extra, "--cache-dir", str(tmp_path / "cache")])
    assert sorted(item.name for item in existing.iterdir()) == ["notes.txt"]


def test_evaluate_refusing_a_checkpoint_leaves_no_output_directory(tmp_path, capsys):
    data = write_squad_json(tmp_path / "dev.json")
    out, not_a_model = tmp_path / "results", tmp_path / "not-a-model"
    not_a_model.mkdir()
    with pytest.raises(SystemExit):
        evaluate_cmd.main(["--ckpt", str(not_a_model), "--validation-file", str(data), "--output-dir", str(out)])
    assert "not a model directory" in capsys.readouterr().err and not out.exists()
