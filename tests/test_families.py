"""Every encoder family the tool claims: exact labels and offsets, the model's own limits, and the
three commands end to end (SQuAD v1.1 and v2.0), each with a tiny model and a tokenizer of the
family's kind built inside the test (tests/families.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from families import FAMILIES, POSITIONS, make_family_model, make_family_tokenizer
from helpers import losses_of

from qa.config.settings import WindowSettings
from qa.data.features import context_offsets, prepare_eval_features, prepare_train_features
from qa.data.windows import build_eval_windows

NAMES = list(FAMILIES)

CONTEXTS = [
    "The statue was made in 1998 near Zürich.  It is a copper statue of Christ, said the naïve Ökonom.",
    "Paris is the capital of France. It was founded in the 3rd century BC on the river Seine.",
    "The Denver Broncos won Super Bowl 50. The game was played in 2016 in Santa Clara.",
    " Café crème costs 3 € in Zürich — a naïve façade, built in 1998 by Søren.  ",
]
ANSWERS = [
    ["1998", "copper statue", "Zürich", "The statue", "naïve Ökonom"],
    ["Paris", "France", "3rd century BC", "river Seine", "the capital"],
    ["Denver Broncos", "Super Bowl 50", "2016", "Santa Clara", "game"],
    ["Café crème", "3 €", "Zürich", "1998", "Søren", "naïve façade"],
]


def _examples() -> dict[str, list]:
    rows = {"id": [], "question": [], "context": [], "answers": []}
    for context, answers in zip(CONTEXTS, ANSWERS):
        for answer in answers:
            rows["id"].append(f"q{len(rows['id'])}")
            rows["question"].append(f"Where is the {answer.split()[0]}?")
            rows["context"].append(context)
            rows["answers"].append({"text": [answer], "answer_start": [context.index(answer)]})
    return rows


@pytest.fixture(scope="module", params=NAMES)
def family_tokenizer(request):
    return request.param, make_family_tokenizer(request.param)


@pytest.mark.parametrize("window", [WindowSettings(32, 8), WindowSettings(48, 16), WindowSettings(384, 128)])
def test_labels_decode_exactly_to_the_gold_answer_and_offsets_have_no_edge_white_space(family_tokenizer, window):
    name, tokenizer = family_tokenizer
    examples = _examples()
    features = prepare_train_features(examples, tokenizer, window)
    labelled = 0
    for row, example in enumerate(features["example_index"]):
        start, end = features["start_positions"][row], features["end_positions"][row]
        ids = features["input_ids"][row]
        cls_position = ids.index(tokenizer.cls_token_id)
        if (start, end) == (cls_position, cls_position):
            continue
        eval_offsets = prepare_eval_features(
            {key: values[example : example + 1] for key, values in examples.items()}, tokenizer, window
        )["offset_mapping"]
        offsets = next(o for o, f in zip(eval_offsets, _windows_of(features, example)) if f == row)
        context, gold = examples["context"][example], examples["answers"][example]["text"][0]
        assert context[offsets[start][0] : offsets[end][1]] == gold, (name, gold)
        labelled += 1
    assert labelled >= len(examples["id"])  # every answer is labelled in at least one window
    evaluation = prepare_eval_features(examples, tokenizer, window)
    for row, offsets in enumerate(evaluation["offset_mapping"]):
        context = examples["context"][examples["id"].index(evaluation["example_id"][row])]
        spans = [span for span in offsets if span is not None]
        assert spans, name
        for begin, finish in spans:
            text = context[begin:finish]
            assert text and not text[0].isspace() and not text[-1].isspace(), (name, text)
        for (a_begin, a_end), (b_begin, b_end) in zip(spans, spans[1:]):
            # in order (what label bisection needs); byte pieces of one character may share it
            assert b_begin >= a_begin and b_end >= a_end, (name, spans)
            assert not (b_begin == a_begin and b_end > a_end), (name, spans)  # no word-start marker left


def _windows_of(features: dict, example: int) -> list[int]:
    return [row for row, index in enumerate(features["example_index"]) if index == example]


def test_context_offsets_leave_out_white_space_markers_and_overlaps():
    context = "ab  cd ef"
    offsets = [(0, 0), (0, 2), (2, 3), (3, 3), (3, 6), (7, 8), (7, 9), (0, 0)]
    sequence_ids = [None, 1, 1, 1, 1, 1, 1, None]
    assert context_offsets(context, offsets, sequence_ids, 1) == [
        None,
        (0, 2),
        None,  # a space alone is no text
        None,  # an empty span
        (4, 6),  # " cd": its space left out
        None,  # a word-start marker overlapping the next token's first character
        (7, 9),
        None,
    ]


INVISIBLE_CONTEXT = (
    "The \u200bstatue\u200b was made in 19\u00ad98 near \u2060Z\u00fcrich\u200d.  The \ufeffDenver Broncos\u200b won "
    "Super\u00adBowl 50 in \u0301Santa Clara\u200c."
)


def test_no_context_span_begins_or_ends_with_an_invisible_character(family_tokenizer):
    """Zero-width spaces and joiners, soft hyphens, word joiners, a BOM and a lone combining mark around and
    inside words: no token's context span (and so no answer) starts or ends with one, for any family."""
    from qa.text import ends_invisibly, starts_invisibly

    name, tokenizer = family_tokenizer
    examples = {"id": ["i"], "question": ["Who won?"], "context": [INVISIBLE_CONTEXT]}
    for window in (WindowSettings(48, 16), WindowSettings(384, 128)):
        features = prepare_eval_features(examples, tokenizer, window)
        for offsets in features["offset_mapping"]:
            for span in offsets:
                if span is None or span[0] == span[1]:
                    continue
                text = INVISIBLE_CONTEXT[span[0] : span[1]]
                assert not starts_invisibly(text[0]) and not ends_invisibly(text[-1]), (name, repr(text))


LONG_QUESTION = " ".join(["Which statue near Zurich was made in 1998 by the naive Okonom?"] * 12)


def test_a_question_longer_than_a_window_s_room_is_cut_to_fit_for_every_family(family_tokenizer):
    """SentencePiece tokenisers split the piece left at a cut anew, so a question cut at its 64th token
    could come back 65 tokens long and the tokenizer panic (a PanicException, not an Exception)."""
    name, tokenizer = family_tokenizer
    examples = {"id": ["i"], "question": [LONG_QUESTION], "context": ["The statue was made in 1998 near Zurich. " * 5]}
    for max_length in (24, 32, 40, 64, 96):
        for max_question_length in (8, 64):
            window = WindowSettings(max_length, 8, max_question_length)
            features = prepare_eval_features(examples, tokenizer, window)
            assert all(len(ids) <= max_length for ids in features["input_ids"]), (name, max_length)
            assert any(span is not None for offsets in features["offset_mapping"] for span in offsets), name


def test_a_tokenizer_panic_becomes_a_one_line_error():
    from qa.errors import QAError

    class PanicException(BaseException):  # what the tokenizers library raises from Rust
        pass

    class Panicking:
        padding_side = "right"
        model_input_names = ["input_ids"]

        def num_special_tokens_to_add(self, pair):
            return 3

        def __call__(self, *args, **kwargs):
            raise PanicException("called `Result::unwrap()` on an `Err` value\nstack backtrace: ...")

    examples = {"id": ["i"], "question": ["Who?"], "context": ["The Broncos won."]}
    with pytest.raises(QAError, match=r"^the tokenizer failed on these questions \(PanicException: called"):
        prepare_eval_features(examples, Panicking(), WindowSettings(64, 8))


def test_null_positions_are_where_the_tokenizer_puts_its_cls_token(family_tokenizer):
    name, tokenizer = family_tokenizer
    examples = _examples()
    windows = build_eval_windows(examples, tokenizer, WindowSettings(32, 8))
    for window in range(len(windows)):
        ids = windows.input_ids[windows.starts[window] : windows.starts[window] + windows.lengths[window]]
        assert ids[windows.null_positions[window]] == tokenizer.cls_token_id, name
    if name == "xlnet":
        assert np.all(windows.null_positions == windows.lengths - 1)  # XLNet puts CLS last


def test_the_null_position_is_the_window_s_own_cls_even_when_the_context_holds_its_text(family_tokenizer):
    """A context that holds the text of the CLS token ("<cls>" for XLNet, "[CLS]", "<s>") tokenises it as
    that token: the null position is still the window's own CLS, at its start or (XLNet) its end."""
    from qa.data.features import prepare_train_features

    name, tokenizer = family_tokenizer
    context = f"The statue {tokenizer.cls_token} was made in 1998 near Zurich."
    examples = {
        "id": ["i"],
        "question": ["Where?"],
        "context": [context],
        "answers": [{"text": [], "answer_start": []}],
    }
    windows = build_eval_windows(examples, tokenizer, WindowSettings(64, 16))
    edge = windows.lengths - 1 if name == "xlnet" else np.zeros_like(windows.lengths)
    assert np.array_equal(windows.null_positions, edge), name
    labels = prepare_train_features(examples, tokenizer, WindowSettings(64, 16))
    assert labels["start_positions"] == labels["end_positions"] == edge.tolist(), name


def _squad_file(path: Path, unanswerable: bool) -> Path:
    articles = []
    for index, (context, answers) in enumerate(zip(CONTEXTS, ANSWERS)):
        qas = []
        for number, answer in enumerate(answers):
            question = {"id": f"a{index}-{number}", "question": f"Where is the {answer.split()[0]}?"}
            if unanswerable:
                question.update(answers=[], is_impossible=True)
            else:
                question["answers"] = [{"text": answer, "answer_start": context.index(answer)}]
            qas.append(question)
        articles.append({"title": f"t{index}", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps({"version": "v2.0" if unanswerable else "1.1", "data": articles}))
    return path


@pytest.fixture(scope="module", params=NAMES)
def family_model(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(request.param)
    return request.param, make_family_model(request.param, directory / "model")


def _train(model: Path, out: Path, data: Path, max_length: int, steps: int = 12) -> None:
    from qa.commands import train as train_cmd

    train_cmd.main(
        ["--model", str(model), "--train-file", str(data), "--output-dir", str(out), "--max-length", str(max_length)]
        + ["--stride", "16", "--max-steps", str(steps), "--lr", "5e-3", "--batch-size", "8", "--no-eval"]
        + ["--no-progress", "--cache-dir", str(out.parent / "cache"), "--warmup-ratio", "0", "--log-steps", "4"]
    )


def _check_answers(answers: list[dict], context: str) -> None:
    for answer in answers:
        assert context[answer["start"] : answer["end"]] == answer["answer"]
        assert answer["answer"] and answer["answer"] == answer["answer"].strip()


@pytest.mark.slow
def test_each_family_trains_evaluates_and_predicts_with_exact_spans(family_model, tmp_path, capsys):
    from qa.commands import evaluate as evaluate_cmd
    from qa.commands import predict as predict_cmd

    name, model = family_model
    data = _squad_file(tmp_path / "train.json", unanswerable=False)
    out = tmp_path / "out"
    _train(model, out, data, max_length=64)
    metrics = evaluate_cmd.main(
        ["--ckpt", str(out), "--validation-file", str(data), "--max-length", "64", "--stride", "16"]
        + ["--precision", "fp32", "--report", "none"]
    )
    losses = losses_of(out)
    assert losses[-1] < losses[0], (name, losses)  # the labels are learnable: the loss falls
    assert metrics["f1"] > 0, name
    predictions = json.loads((out / "predictions.json").read_text())
    contexts = {f"a{i}-{n}": context for i, context in enumerate(CONTEXTS) for n in range(len(ANSWERS[i]))}
    for question_id, answer in predictions.items():
        assert answer == answer.strip() and answer in contexts[question_id], (name, answer)
    context = CONTEXTS[0]
    answers = predict_cmd.main(
        ["--ckpt", str(out), "--question", "When?", "--context", context, "--top-k", "5", "--precision", "fp32"]
    )
    _check_answers(answers[0], context)
    lines = tmp_path / "in.jsonl"
    lines.write_text("\n".join(json.dumps({"question": "Who?", "context": c}) for c in CONTEXTS))
    capsys.readouterr()
    predict_cmd.main(["--ckpt", str(out), "--input", str(lines), "--precision", "fp32", "--top-k", "3"])
    whole = capsys.readouterr().out
    # The answers do not depend on how windows are batched: forward passes of at most 64 tokens (one window).
    predict_cmd.main(
        ["--ckpt", str(out), "--input", str(lines), "--precision", "fp32", "--top-k", "3", "--max-batch-tokens", "64"]
    )
    batched = [json.loads(line)["answers"] for line in capsys.readouterr().out.splitlines()]
    for these, those in zip(batched, [json.loads(line)["answers"] for line in whole.splitlines()], strict=True):
        assert [(a["answer"], a["start"], a["end"]) for a in these] == [
            (a["answer"], a["start"], a["end"]) for a in those
        ]
        assert [a["score"] for a in these] == pytest.approx([a["score"] for a in those], abs=1e-5), name  # fp32 sums
    records = [json.loads(line) for line in whole.splitlines()]
    assert len(records) == len(CONTEXTS)
    for record, context in zip(records, CONTEXTS):
        _check_answers(record["answers"], context)
    # bf16, the default on CPUs with native bf16: forced here, so that every CPU runs it for every family.
    bf16 = evaluate_cmd.main(
        ["--ckpt", str(out), "--validation-file", str(data), "--max-length", "64", "--stride", "16"]
        + ["--precision", "bf16", "--report", "none", "--output-dir", str(tmp_path / "bf16")]
    )
    assert bf16["precision"] == "bf16" and bf16["num_examples"] == metrics["num_examples"], name
    for question_id, answer in json.loads((tmp_path / "bf16" / "predictions.json").read_text()).items():
        assert answer == answer.strip() and answer in contexts[question_id], (name, answer)
    answers = predict_cmd.main(
        ["--ckpt", str(out), "--question", "When?", "--context", context, "--top-k", "5", "--precision", "bf16"]
    )
    _check_answers(answers[0], context)


@pytest.mark.slow
def test_each_family_runs_at_the_longest_window_it_accepts_and_refuses_one_more(family_model, tmp_path):
    from qa.commands import predict as predict_cmd
    from qa.errors import QAError
    from qa.model.loading import check_model_fits, load_config, position_limit

    name, model = family_model
    limit = position_limit(load_config(str(model)))
    expected = None if name == "xlnet" else POSITIONS
    assert limit == expected, name
    longest = limit or 2 * POSITIONS  # no limit: well past every other family's
    context = " ".join(["The Denver Broncos won Super Bowl 50 in Santa Clara in 2016."] * 40)
    answers = predict_cmd.main(
        ["--ckpt", str(model), "--question", "Who won?", "--context", context, "--precision", "fp32"]
        + ["--max-length", str(longest), "--stride", "32", "--top-k", "3"]
    )
    _check_answers(answers[0], context)
    if limit is not None:
        with pytest.raises(QAError, match=f"--max-length {limit + 1} is longer than"):
            check_model_fits(str(model), WindowSettings(limit + 1, 32))


@pytest.mark.slow
def test_a_v2_model_of_each_family_abstains_at_its_own_cls_position(family_model, tmp_path):
    from qa.commands import predict as predict_cmd

    name, model = family_model
    data = _squad_file(tmp_path / "v2.json", unanswerable=True)
    out = tmp_path / "out"
    _train(model, out, data, max_length=48, steps=15)
    for context in CONTEXTS:
        answers = predict_cmd.main(
            ["--ckpt", str(out), "--question", "Where?", "--context", context, "--precision", "fp32"]
            + ["--max-length", "48", "--stride", "16", "--null-threshold", "0"]
        )
        assert answers[0][0]["answer"] == "" and answers[0][0].get("no_answer"), (name, answers[0][0])
