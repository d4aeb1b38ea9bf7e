"""One rule for text, in every entry point alike: data files, predict.py's --input, argv and
--context-file, and the server's bodies (qa/text.py says the rule)."""

import csv
import io
import json
import subprocess
import sys

import pytest
from helpers import REPO_ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa.commands import predict as predict_cmd
from qa.config.predict import PredictConfig
from qa.data.loading import load_examples, validate_records
from qa.data.questions import Question, QuestionProblem, question_from_json
from qa.errors import QAError
from qa.serve.api import BadRequest, parse_questions
from qa.text import text_problem

CONTEXT = "In 2016 the Denver Broncos won the super bowl."
INVISIBLE_ONLY = "\u200b\u200d\ufeff\x07 \t"


def one_line_error(capsys, argv, *fragments):
    with pytest.raises(SystemExit) as caught:
        predict_cmd.main(argv)
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    ("question", "context", "fragment"),
    [
        (b"Who w\xffon?", CONTEXT.encode(), "--question: is not UTF-8 text (byte 0xFF at character 5)"),
        (b"Who won?", b"The Denver Broncos won in G\xf6ttingen.", "--context: is not UTF-8 text (byte 0xF6"),
    ],
)
def test_bytes_that_are_not_utf8_on_the_command_line_are_one_line(arranged_model_dir, question, context, fragment):
    command = [sys.executable, "predict.py", "--ckpt", str(arranged_model_dir), "--question", question]
    result = subprocess.run([*command, "--context", context], cwd=REPO_ROOT, capture_output=True, timeout=120)
    err = result.stderr.decode()
    assert result.returncode == 2 and fragment in err and err.count("\n") == 1, err


def test_input_lines_follow_the_rule_and_raw_line_separators_inside_strings_are_fine(
    arranged_model_dir, tmp_path, capsys
):
    path = tmp_path / "in.jsonl"
    # ensure_ascii=False writes U+2028, U+2029 and U+0085 raw: valid JSON Lines that str.splitlines would cut.
    lines = [
        json.dumps({"question": f"Who{sep}won?", "context": CONTEXT}, ensure_ascii=False) for sep in "\u2028\u2029\x85"
    ]
    path.write_text("\ufeff" + "\r\n".join(lines) + "\n", encoding="utf-8")  # a BOM and CRLF line ends too
    predict_cmd.main(["--ckpt", str(arranged_model_dir), "--input", str(path), "--max-length", "64", "--stride", "16"])
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["id"], row["answer"]) for row in answers] == [(str(n), "Denver Broncos") for n in (1, 2, 3)]

    path.write_text(json.dumps({"question": "Who \ud800 won?", "context": CONTEXT}) + "\n")  # a \ud800 escape
    one_line_error(
        capsys, ["--ckpt", str(arranged_model_dir), "--input", str(path)], "line 1, field 'question'", "U+D800"
    )
    path.write_text(json.dumps({"question": "Who won?", "context": INVISIBLE_ONLY}) + "\n")
    one_line_error(capsys, ["--ckpt", str(arranged_model_dir), "--input", str(path)], "field 'context'", "no visible")
    path.write_text("[" * 5000 + "]" * 5000 + "\n")
    one_line_error(capsys, ["--ckpt", str(arranged_model_dir), "--input", str(path)], "line 1", "nested too deeply")


def test_an_invisible_context_is_refused_on_the_command_line_and_a_bom_file_is_accepted(
    arranged_model_dir, tmp_path, capsys
):
    base = ["--ckpt", str(arranged_model_dir), "--question", "Who won?"]
    one_line_error(capsys, [*base, "--context", INVISIBLE_ONLY], "--context: is empty (no visible character)")
    context_file = tmp_path / "context.txt"
    context_file.write_text("\ufeff" + CONTEXT, encoding="utf-8")
    predict_cmd.main([*base, "--context-file", str(context_file), "--json", "--max-length", "64", "--stride", "16"])
    answer = json.loads(capsys.readouterr().out)
    assert answer["answer"] == "Denver Broncos" and CONTEXT[answer["start"] : answer["end"]] == "Denver Broncos"


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".csv"])
def test_data_files_with_a_bom_load_and_lone_surrogates_name_the_record_and_field(tmp_path, suffix):
    record = {"id": "q1", "title": "t", "question": "Who won?", "context": CONTEXT}
    answers = {"text": ["Denver Broncos"], "answer_start": [CONTEXT.index("Denver")]}
    path = tmp_path / f"data{suffix}"

    def write(question):
        row = {**record, "question": question, "answers": answers}
        if suffix == ".json":
            text = json.dumps([row])
        elif suffix == ".jsonl":
            text = json.dumps(row)
        else:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=list(row))
            writer.writeheader()
            writer.writerow({**row, "answers": json.dumps(answers)})
            text = buffer.getvalue()
        path.write_text("\ufeff" + text, encoding="utf-8", errors="surrogatepass")

    write("Who won?")
    assert load_examples(file=path, for_training=True)["id"] == ["q1"]
    if suffix == ".csv":
        return  # CSV holds raw text: a lone surrogate cannot be written as valid UTF-8 at all
    write("Who \ud800 won?")
    with pytest.raises(QAError, match=r"record 'q1', field 'question': is not valid Unicode text \(lone surrogate"):
        load_examples(file=path, for_training=False)


# ---------------------------------------------------------------- the same decision everywhere

# Any code point, lone surrogates (Cs) and zero-width and control characters (Cf, Cc) included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | st.sampled_from(
    ["", " ", INVISIBLE_ONLY, "\ud800", "Who\udcffwon?", "Denver", "🎉 Broncos", "a\u2028b"]
)


def entry_point_decisions(question, context):
    """Accepted (None) or the field refused, by each entry point that reads a question."""
    decisions = {}
    try:
        question_from_json({"question": question, "context": context}, max_top_k=20)
        decisions["--input"] = None
    except QuestionProblem as problem:
        decisions["--input"] = problem.field
    body = json.dumps({"question": question, "context": context}).encode()
    try:
        parse_questions(body, PredictConfig())
        decisions["server"] = None
    except BadRequest as problem:
        assert problem.status == 422, problem.message
        decisions["server"] = problem.field
    record = {"id": "x", "question": question, "context": context, "answers": {"text": [], "answer_start": []}}
    try:
        validate_records(iter([(0, record)]), "data.json", for_training=False)
        decisions["data file"] = None
    except QAError as error:
        assert "\n" not in str(error)
        decisions["data file"] = str(error).split("field '")[1].split("'")[0]
    return decisions


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=ANY_TEXT, as_question=st.booleans())
def test_any_text_is_answered_or_refused_in_one_line_alike_by_every_entry_point(text, as_question, tiny_reader):
    question, context = (text, CONTEXT) if as_question else ("Who won?", text)
    decisions = entry_point_decisions(question, context)
    expected = None if text_problem(text) is None else ("question" if as_question else "context")
    assert decisions == {"--input": expected, "server": expected, "data file": expected}
    if expected is None:
        (answers,) = tiny_reader.answer([Question(question, context)])
        span = answers[0]
        assert 0 <= span["start"] <= span["end"] <= len(context)
        assert context[span["start"] : span["end"]] == span["answer"]


@pytest.fixture(scope="module")
def tiny_reader(arranged_model_dir):
    from qa.config.settings import DecodeSettings, WindowSettings
    from qa.eval.answering import load_reader

    return load_reader(str(arranged_model_dir), WindowSettings(64, 16, 64), DecodeSettings(), 8, "fp32")
