import json
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

from qa.commands import predict as predict_cmd

FILLER = "the people of the city played music in the church. " * 12
LONG_CONTEXT = FILLER + "In 2016 the Denver Broncos won the super bowl."


def run_predict(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "predict.py", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )


@pytest.mark.slow
def test_the_real_command_reads_stdin_finds_the_second_window_and_imports_no_datasets(arranged_model_dir):
    """One process, as a user runs it: context from standard input, answer in the second window."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['predict.py', '--ckpt', {str(arranged_model_dir)!r}, '--question', 'Who won?', "
        "'--context-file', '-', '--max-length', '64', '--stride', '16', '--json']\n"
        "runpy.run_path('predict.py', run_name='__main__')\n"
        "print(sorted(m for m in ('datasets', 'evaluate', 'pandas') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, input=LONG_CONTEXT
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[0])
    assert set(answer) == {"answer", "score", "start", "end"}
    assert answer["answer"] == "Denver Broncos"
    assert LONG_CONTEXT[answer["start"] : answer["end"]] == "Denver Broncos"
    assert LONG_CONTEXT.index("Denver") > 64  # beyond the first window
    assert 0 < answer["score"] <= 1
    assert result.stdout.splitlines()[-1] == "[]"


def test_plain_output_and_top_k(arranged_model_dir, capsys):
    predict_cmd.main(
        [
            "--ckpt",
            str(arranged_model_dir),
            "--question",
            "Who?",
            "--context",
            LONG_CONTEXT,
            "--max-length",
            "64",
            "--stride",
            "16",
        ]
    )
    answer, score = capsys.readouterr().out.splitlines()
    assert answer == "Denver Broncos" and 0 < float(score) <= 1
    results = predict_cmd.main(
        [
            "--ckpt",
            str(arranged_model_dir),
            "--question",
            "Who?",
            "--context",
            LONG_CONTEXT,
            "--max-length",
            "64",
            "--stride",
            "16",
            "--top-k",
            "3",
            "--json",
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == results[0] and len(printed) == 3
    assert printed[0]["answer"] == "Denver Broncos"
    assert round(printed[0]["score"], 4) == float(score)  # asking for more answers does not change the best
    assert [a["score"] for a in printed] == sorted((a["score"] for a in printed), reverse=True)


def test_jsonl_input_answers_every_line(arranged_model_dir, tmp_path, capsys):
    path = tmp_path / "questions.jsonl"
    lines = [
        {"id": "x", "question": "Who?", "context": LONG_CONTEXT},
        {"question": "Who played?", "context": "The Denver Broncos played in Denver."},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    predict_cmd.main(["--ckpt", str(arranged_model_dir), "--input", str(path), "--max-length", "64", "--stride", "16"])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["id"] for o in out] == ["x", "2"]
    assert [o["answer"] for o in out] == ["Denver Broncos", "Denver Broncos"]


def expect_error(capsys, argv, *fragments):
    with pytest.raises(SystemExit) as caught:
        predict_cmd.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    return err


def test_bad_inputs_are_one_line_errors(arranged_model_dir, tiny_model_dir, tmp_path, capsys, monkeypatch):
    ckpt = str(arranged_model_dir)
    expect_error(capsys, ["--ckpt", ckpt, "--question", "  ", "--context", "text"], "question", "empty")
    expect_error(capsys, ["--ckpt", ckpt, "--question", "Who?", "--context", ""], "context", "empty")
    expect_error(capsys, ["--ckpt", str(tmp_path / "missing"), "--question", "q", "--context", "c"], "missing")
    monkeypatch.chdir(tmp_path)
    expect_error(capsys, ["--question", "q", "--context", "c"], "train.py", "--ckpt")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "context": "c"}\n{"question": \n')
    expect_error(capsys, ["--ckpt", ckpt, "--input", str(bad)], "line 2", "invalid JSON")
    # a checkpoint that is not a question-answering model
    from transformers import DistilBertConfig, DistilBertModel

    base = tmp_path / "base"
    DistilBertModel(DistilBertConfig(vocab_size=99, dim=16, hidden_dim=32, n_layers=1, n_heads=2)).save_pretrained(base)
    capsys.readouterr()
    expect_error(capsys, ["--ckpt", str(base), "--question", "q", "--context", "c"], "not a question-answering model")


def test_bad_input_from_the_command_line_has_no_traceback(arranged_model_dir):
    result = run_predict("--ckpt", arranged_model_dir, "--question", "", "--context", "text")
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr


def test_max_answer_length_limits_the_span(arranged_model_dir, capsys):
    argv = ["--ckpt", str(arranged_model_dir), "--question", "Who?", "--context", "The Denver Broncos won.", "--json"]
    predict_cmd.main(argv)
    assert json.loads(capsys.readouterr().out)["answer"] == "Denver Broncos"
    predict_cmd.main([*argv, "--max-answer-length", "1"])
    short = json.loads(capsys.readouterr().out)
    assert short["answer"] in {"Denver", "Broncos"}


def test_input_follows_the_server_rules_for_fields_and_says_what_json_lines_is(arranged_model_dir, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    argv = ["--ckpt", str(arranged_model_dir), "--input", str(path)]
    path.write_text(json.dumps({"question": "Who won?", "context": "The Broncos won.", "contxt": "x"}) + "\n")
    expect_error(capsys, argv, "line 1, field 'contxt' is not a field of a question")
    path.write_text(json.dumps({"Question": "Who won?", "context": "The Broncos won."}) + "\n")
    expect_error(capsys, argv, "field 'question' is missing (found 'Question': field names are lower case)")
    path.write_text(json.dumps([{"question": "Who won?", "context": "The Broncos won."}]) + "\n")
    expect_error(capsys, argv, "line 1", "JSON Lines holds one object per line, not a JSON array")
    path.write_text('{"question": "Who won?", "context": "The Broncos won.", "context": "x"}\n')
    expect_error(capsys, argv, "line 1: duplicate key 'context'")


def test_json_lines_output_splits_into_one_record_per_line_with_any_splitter(arranged_model_dir, tmp_path, capsys):
    path = tmp_path / "in.jsonl"
    ids = [f"café{separator}b" for separator in "\u2028\u2029\x85"]
    context = "The Denver Broncos won."
    path.write_text("\n".join(json.dumps({"id": i, "question": "Who won?", "context": context}) for i in ids) + "\n")
    predict_cmd.main(["--ckpt", str(arranged_model_dir), "--input", str(path)])
    out = capsys.readouterr().out
    lines = out.splitlines()  # also splits at U+2028, U+2029 and U+0085
    assert len(lines) == 3 and [json.loads(line)["id"] for line in lines] == ids
    assert "\\u2028" in out and "café" in out  # the separators escaped, the rest readable UTF-8


# ---------------------------------------------------------------- several passages at once


def test_an_answer_in_the_last_passage_comes_with_its_passage_and_offsets(arranged_model_dir, tmp_path, capsys):
    passages = ["The people played music in the church.", "Paris is a city.", "In 2016 the Denver Broncos won."]
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "m", "question": "Who won?", "contexts": passages, "top_k": 4}) + "\n")
    predict_cmd.main(["--ckpt", str(arranged_model_dir), "--input", str(path)])
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    answers = record["answers"]
    assert answers[0]["answer"] == "Denver Broncos" and answers[0]["passage"] == 2
    for answer in answers:
        assert passages[answer["passage"]][answer["start"] : answer["end"]] == answer["answer"]
    spans = [(a["passage"], a["start"], a["end"]) for a in answers]
    assert len(spans) == len(set(spans)) == 4


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"question": "Who?", "context": "x y", "contexts": ["a b"]}, "field 'contexts' cannot be given together"),
        ({"question": "Who?", "contexts": []}, "field 'contexts' must be a non-empty list"),
        ({"question": "Who?", "contexts": ["Denver won.", "\u200b "]}, "field 'contexts[1]'"),
    ],
)
def test_bad_passage_lists_are_one_line_errors(arranged_model_dir, tmp_path, capsys, record, fragment):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(record) + "\n")
    expect_error(capsys, ["--ckpt", str(arranged_model_dir), "--input", str(path)], "line 1", fragment)


def test_a_v2_model_says_no_answer_once_across_passages(arranged_model_dir, tmp_path, capsys):
    import shutil

    from qa.model.carried import store_carried

    model = tmp_path / "v2"
    shutil.copytree(arranged_model_dir, model)
    store_carried(model, null_threshold=-1e6)  # abstains whatever the passages
    path = tmp_path / "in.jsonl"
    passages = ["In 2016 the Denver Broncos won.", "Paris is a city."]
    path.write_text(json.dumps({"question": "Who won?", "contexts": passages, "top_k": 3}) + "\n")
    predict_cmd.main(["--ckpt", str(model), "--input", str(path)])
    answers = json.loads(capsys.readouterr().out)["answers"]
    assert answers[0]["no_answer"] and answers[0]["passage"] is None and answers[0]["score"] > 0.5
    assert sum(a["no_answer"] for a in answers) == 1
