"""Round 4 of hardening: the calibrator, selective answering, several passages and the report under
hostile use (each test fails on the code before it)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest


def _store_many(directory: str, key: str, times: int) -> None:
    from qa.model.carried import store_carried

    for value in range(times):
        store_carried(Path(directory), **{key: value})


def test_two_processes_storing_into_one_config_json_lose_nothing_and_corrupt_nothing(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=_store_many, args=(str(tmp_path), key, 60)) for key in ("null_threshold", "calibration")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=120)
        assert writer.exitcode == 0
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored == {"model_type": "bert", "qa_null_threshold": 59, "qa_calibration": 59}
    assert [path.name for path in tmp_path.iterdir()] == ["config.json"]  # no temporary left behind


# ---------------------------------------------------------------- the calibrator (items 2, 3, 9, 11)

CONTEXT = "In 2016 the Denver Broncos won the super bowl."
LONG_CONTEXT = "The people played music in the church of the city. " * 6 + CONTEXT


def _questions(path: Path, count: int, all_wrong: bool = False) -> Path:
    """``count`` questions that the arranged model (it answers "Denver Broncos", less surely in a long
    context) gets right three times in four on the short context, once in four on the long one (every
    third question), so that its scores rank; ``all_wrong``: never right."""
    rows = []
    for index in range(count):
        long = index % 3 == 0
        context = LONG_CONTEXT if long else CONTEXT
        right = not all_wrong and (index % 4 == 0 if long else index % 4 != 0)
        gold = "Denver Broncos" if right else "2016"
        answers = {"text": [gold], "answer_start": [context.index(gold)]}
        rows.append({"id": f"q{index}", "question": f"Who won, {index}?", "context": context, "answers": answers})
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture
def model_copy(arranged_model_dir, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(arranged_model_dir, model)
    return model


def _evaluate(*argv: str) -> int:
    from qa.commands import evaluate as evaluate_cmd

    try:
        evaluate_cmd.main(list(argv))
    except SystemExit as stop:
        return int(stop.code)
    return 0


@pytest.mark.slow
def test_a_calibrator_that_cannot_tell_right_from_wrong_is_refused_and_nothing_is_stored_or_written(
    model_copy, tmp_path, capsys
):
    before = (model_copy / "config.json").read_text()
    results = tmp_path / "results"
    wrong = _questions(tmp_path / "wrong.jsonl", 240, all_wrong=True)  # every answer wrong
    argv = ["--ckpt", str(model_copy), "--output-dir", str(results), "--no-progress", "--calibrate"]
    assert _evaluate(*argv, "--validation-file", str(wrong)) == 2
    err = capsys.readouterr().err
    assert "--calibrate: all 240 answers are wrong: a calibrator needs right and wrong answers" in err
    assert len(err.strip().splitlines()[-1:]) == 1 and "Traceback" not in err
    assert (model_copy / "config.json").read_text() == before and not results.exists()
    # Unanswerable questions only (a v1 model answers them all, wrongly): refused before any work.
    rows = [{"id": "u", "question": "Who?", "context": CONTEXT, "answers": {"text": [], "answer_start": []}}]
    unanswerable = tmp_path / "unanswerable.jsonl"
    unanswerable.write_text("\n".join(json.dumps({**rows[0], "id": f"u{i}"}) for i in range(250)) + "\n")
    assert _evaluate(*argv, "--validation-file", str(unanswerable)) == 2
    assert "250 questions (0 with an answer, 250 without)" in capsys.readouterr().err
    assert (model_copy / "config.json").read_text() == before and not results.exists()


def test_a_calibrator_is_refused_when_its_slope_would_erase_the_ranking():
    import numpy as np

    from qa.eval.calibration import fitted_on_evaluation

    rng = np.random.default_rng(0)
    log_probs = rng.uniform(-3, -0.01, size=400)
    correct = (log_probs < -1.5).astype(float)  # the less likely spans are the right ones: reversed
    calibrator, problem = fitted_on_evaluation(log_probs, correct)
    assert calibrator is None and "do not rank its right answers above its wrong ones" in problem
    calibrator, problem = fitted_on_evaluation(log_probs, 1.0 - correct)
    assert problem is None and calibrator.slope > 0


@pytest.mark.slow
def test_a_calibrator_fitted_under_other_windows_is_not_applied(model_copy, tmp_path, capsys):
    from qa.commands import predict as predict_cmd

    data = _questions(tmp_path / "dev.jsonl", 240)
    windows = ["--max-length", "32", "--stride", "8"]
    argv = ["--ckpt", str(model_copy), "--validation-file", str(data), "--output-dir", str(tmp_path / "r")]
    assert _evaluate(*argv, "--no-progress", "--calibrate", *windows) == 0
    stored = json.loads((model_copy / "config.json").read_text())["qa_calibration"]
    assert stored["fitted_with"] == {"max_length": 32, "stride": 8, "max_question_length": 64, "max_answer_length": 30}
    capsys.readouterr()

    def score(*extra: str) -> tuple[float, str]:
        predict_cmd.main(["--ckpt", str(model_copy), "--question", "Who won?", "--context", CONTEXT, "--json", *extra])
        captured = capsys.readouterr()
        return json.loads(captured.out)["score"], captured.err

    calibrated, err = score(*windows)
    assert "fitted under other settings" not in err
    plain, err = score("--max-length", "48", "--stride", "16")
    assert "calibrator was fitted under other settings (--max-length 32 (now 48), --stride 8 (now 16))" in err
    metrics_argv = [*argv, "--no-progress", "--max-length", "48", "--stride", "16", "--report", "none"]
    assert _evaluate(*metrics_argv) == 0
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["calibrated"] is False
    assert plain != calibrated


@pytest.mark.slow
def test_calibrating_again_compares_with_the_stored_calibrator_and_says_it_replaces_it(model_copy, tmp_path, capsys):
    data = _questions(tmp_path / "dev.jsonl", 240)
    argv = ["--ckpt", str(model_copy), "--validation-file", str(data), "--output-dir", str(tmp_path / "r")]
    assert _evaluate(*argv, "--no-progress", "--calibrate") == 0
    first = capsys.readouterr().err
    assert "with the model's own scores" in first and "has no calibrator" not in first
    report = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert report["calibrated"] is True  # the files describe the scores as they now are
    assert _evaluate(*argv, "--no-progress", "--calibrate") == 0
    second = capsys.readouterr().err
    assert (
        "with the stored calibrator's scores" in second and "replaced the stored calibrator (fitted on 240)" in second
    )


# ---------------------------------------------------------------- selective answering (items 4, 10)


def _ask(model: Path, capsys, context: str | None = None, contexts: list[str] | None = None, **fields) -> list:
    from qa.commands import predict as predict_cmd

    item = {"question": "Who won?", **({"contexts": contexts} if contexts else {"context": context}), **fields}
    path = model.parent / "ask.jsonl"
    path.write_text(json.dumps(item) + "\n")
    capsys.readouterr()
    predict_cmd.main(["--ckpt", str(model), "--input", str(path), "--max-length", "32", "--stride", "8"])
    record = json.loads(capsys.readouterr().out)
    record.pop("id")
    return record["answers"] if "answers" in record else [record]


# Denver and Broncos in several windows, with other filler around each: the same span family scored
# differently per window.
MULTI_WINDOW = (
    "Denver broncos won. "
    + "The people played music in the church. " * 3
    + "The denver team and the broncos played. "
    + "Water north south. " * 4
    + "Denver broncos."
)


@pytest.mark.slow
def test_the_first_answer_does_not_depend_on_top_k_under_min_confidence_and_lists_follow_their_scores(
    arranged_model_dir, capsys
):
    for fields in ({"context": MULTI_WINDOW}, {"contexts": [MULTI_WINDOW, CONTEXT]}):
        listed = _ask(arranged_model_dir, capsys, top_k=8, **fields)
        spans = [answer["score"] for answer in listed if not answer.get("no_answer")]
        assert spans == sorted(spans, reverse=True) and len(spans) > 2  # the order of the scores shown
        for cut in sorted({round(score, 6) for score in spans}) + [0.0, 1.0]:
            first = _ask(arranged_model_dir, capsys, top_k=1, min_confidence=cut, **fields)[0]
            many = _ask(arranged_model_dir, capsys, top_k=5, min_confidence=cut, **fields)
            assert first == many[0], (fields.keys(), cut)
            assert all(answer["score"] >= cut or answer.get("withheld") for answer in many)


def test_a_withheld_answer_is_told_apart_from_an_abstention_and_names_no_passage(arranged_model_dir, capsys):
    single = _ask(arranged_model_dir, capsys, context=CONTEXT, min_confidence=1.0)[0]
    assert single["withheld"] and single["no_answer"] and single["answer"] == "" and "passage" not in single
    several = _ask(arranged_model_dir, capsys, contexts=[CONTEXT, "Paris is in France."], min_confidence=1.0)[0]
    assert several["withheld"] and several["no_answer"] and several["passage"] is None
    kept = _ask(arranged_model_dir, capsys, context=CONTEXT, min_confidence=0.0)[0]
    assert not kept["no_answer"] and "withheld" not in kept


def test_a_one_token_context_is_not_scored_certain_whatever_it_says(arranged_model_dir, capsys):
    for context in ("Paris", "Denver"):
        answer = _ask(arranged_model_dir, capsys, context=context)[0]
        assert answer["answer"] == context and answer["score"] < 1.0


# ---------------------------------------------------------------- the server's cost bounds (item 5)


def _serving_config(**overrides):
    from qa.config.predict import PredictConfig

    config = PredictConfig(serve=True)
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def test_a_request_is_bounded_by_its_passages_not_only_its_questions_and_bytes():
    from qa.serve.api import BadRequest, parse_questions

    config = _serving_config(max_queue=100, max_passages=64)
    many = json.dumps({"question": "Who?", "contexts": ["a"] * 3000}).encode()  # 15 KB, inside the byte limit
    with pytest.raises(BadRequest) as refused:
        parse_questions(many, config)
    assert refused.value.status == 413 and "3000 passages; at most 64 (--max-passages)" in refused.value.message
    spread = json.dumps([{"question": "Who?", "contexts": ["a", "b", "c"]}] * 40).encode()  # 40 questions, 120
    with pytest.raises(BadRequest) as refused:
        parse_questions(spread, config)
    assert refused.value.status == 413 and "120 passages in one request; at most 100 (--max-queue)" in (
        refused.value.message
    )
    questions, _ = parse_questions(json.dumps([{"question": "Who?", "contexts": ["a", "b"]}] * 50).encode(), config)
    assert len(questions) == 50


class _CountingReader:
    """Answers every question with its passage count; gives up ``give_up`` after the first call."""

    def __init__(self, loop):
        self.loop, self.calls, self.give_up = loop, [], None

    def answer(self, questions):
        self.calls.append(sum(len(q.passages) for q in questions))
        if self.give_up is not None:
            self.loop.call_soon_threadsafe(self.give_up.cancel)  # as the answer time-out does
        return [[{"answer": "", "score": 0.0, "start": 0, "end": 0}] for _ in questions]


def test_the_queue_counts_passages_and_work_of_a_request_given_up_stops_between_batches():
    import asyncio

    from qa.data.questions import Question
    from qa.serve.api import BadRequest
    from qa.serve.batcher import Batcher

    async def queue_scenario():
        batcher = Batcher(_CountingReader(asyncio.get_running_loop()), _serving_config(max_queue=20))
        heavy = [Question("Who?", "", contexts=["a", "b", "c"]) for _ in range(6)]  # 18 passages
        batcher.submit(heavy, "r0")  # not started: it waits
        with pytest.raises(BadRequest) as busy:
            batcher.submit(heavy, "r1")  # 18 + 18 > 20
        assert busy.value.status == 503 and "busy: 18 passages waiting (limit 20)" in busy.value.message
        batcher.submit([Question("Who?", "ctx")] * 2, "r2")  # 2 more passages fit

    async def give_up_scenario():
        reader = _CountingReader(asyncio.get_running_loop())
        batcher = Batcher(reader, _serving_config(max_queue=100, max_batch_questions=4, batch_wait_ms=0))
        batcher.start()
        try:
            questions = [Question("Who?", "", contexts=["a", "b"]) for _ in range(10)]  # 20 passages: 10 calls of 2
            pending = batcher.submit(questions, "long")
            reader.give_up = pending.future
            with pytest.raises(asyncio.CancelledError):
                await pending.future
            deadline = asyncio.get_running_loop().time() + 10
            while batcher.waiting and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            small = batcher.submit([Question("Who?", "ctx")], "next")
            assert await small.future == [[{"answer": "", "score": 0.0, "start": 0, "end": 0}]]
            return reader.calls, batcher.dropped
        finally:
            await batcher.stop()

    asyncio.run(queue_scenario())
    calls, dropped = asyncio.run(give_up_scenario())
    assert calls[0] == 4 and calls[-1] == 1 and len(calls) == 2  # the given-up request stopped after one call
    assert dropped == 16


# ---------------------------------------------------------------- --distractors (items 6, 7, 13)

BRONCOS = "In 2016 the Denver Broncos won the super bowl."
PARAGRAPHS = [BRONCOS, "The people played music in the church.", "Paris is a city of music.", "The king won in 1900."]


def _articles_file(path: Path, titled: bool = True, unanswerable_last: bool = False) -> Path:
    """Two articles of two paragraphs each, one question per paragraph (titles optional)."""
    articles = []
    for number, pair in enumerate((PARAGRAPHS[:2], PARAGRAPHS[2:])):
        paragraphs = []
        for index, context in enumerate(pair):
            word = "Denver Broncos" if "Denver" in context else context.split()[1]
            qa = {"id": f"q{number}{index}", "question": "Who won?"}
            if unanswerable_last and number == 1 and index == 1:
                qa.update(answers=[], is_impossible=True)
            else:
                qa["answers"] = [{"text": word, "answer_start": context.index(word)}]
            paragraphs.append({"context": context, "qas": [qa]})
        articles.append({**({"title": f"article {number}"} if titled else {}), "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": "v2.0" if unanswerable_last else "1.1", "data": articles}))
    return path


def test_distractors_without_titles_are_refused_by_evaluation_and_training(arranged_model_dir, tmp_path, capsys):
    from helpers import tiny_train_argv

    from qa.commands import train as train_cmd

    untitled = _articles_file(tmp_path / "untitled.json", titled=False)
    argv = ["--ckpt", str(arranged_model_dir), "--validation-file", str(untitled), "--distractors", "1"]
    assert _evaluate(*argv, "--output-dir", str(tmp_path / "e")) == 2
    assert "4 of 4 examples have no title" in capsys.readouterr().err
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as refused:
        train_cmd.main(
            tiny_train_argv(arranged_model_dir, out, tmp_path / "cache", "--distractors", "1", "--no-eval")
            + ["--train-file", str(untitled), "--max-steps", "1"]
        )
    assert refused.value.code == 2 and "have no title" in capsys.readouterr().err


def test_distractor_evaluation_replaces_the_whole_result_set_and_scores_passages_of_answerable_questions(
    arranged_model_dir, tmp_path, capsys
):
    data = _articles_file(tmp_path / "dev.json", unanswerable_last=True)
    out = tmp_path / "results"
    common = ["--ckpt", str(arranged_model_dir), "--validation-file", str(data), "--output-dir", str(out)]
    assert _evaluate(*common, "--save-nbest", "--no-progress") == 0
    assert {"report.json", "report.html", "nbest_predictions.json", "na_prob.json"} <= {p.name for p in out.iterdir()}
    assert _evaluate(*common, "--distractors", "1") == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.json"]
    err = capsys.readouterr().err
    assert "writes predictions.json and metrics.json only" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["passage_accuracy_of"] == 3  # the unanswerable question has no right passage to find
    assert _evaluate(*common, "--distractors", "1", "--save-nbest") == 2
    assert "--save-nbest lists single passages' spans: not with --distractors" in capsys.readouterr().err


@pytest.mark.slow
def test_distractor_training_bounds_a_step_by_batch_size_notes_lone_questions_and_keeps_its_count_on_resume(
    arranged_model_dir, tmp_path, capsys
):
    import numpy as np
    from helpers import tiny_train_argv, train_log

    from qa.commands import train as train_cmd
    from qa.data.distractors import bounded_group_windows

    groups = np.array([0, 0, 0, 0, 0, 1, 1])
    window_row = np.array([0, 0, 1, 1, 2, 3, 4])
    passage_number = np.array([0, 1, 2, 0, 1])  # rows 0-2: question 0 (own, two distractors), rows 3-4: question 1
    kept = bounded_group_windows(groups, window_row, passage_number, batch_size=4)
    assert kept.tolist() == [0, 1, 2, 3, 5, 6]  # question 0: own 2 + first distractor 2; the second does not fit

    data = _articles_file(tmp_path / "train.json")
    lone = json.loads(data.read_text())
    lone["data"].append(
        {
            "title": "alone",
            "paragraphs": [
                {
                    "context": BRONCOS,
                    "qas": [
                        {
                            "id": "l",
                            "question": "Who?",
                            "answers": [{"text": "Denver Broncos", "answer_start": BRONCOS.index("Denver")}],
                        }
                    ],
                }
            ],
        }
    )
    data.write_text(json.dumps(lone))
    out = tmp_path / "out"
    argv = tiny_train_argv(arranged_model_dir, out, tmp_path / "cache", "--no-eval", "--train-file", str(data))
    argv += ["--distractors", "3", "--batch-size", "1", "--max-steps", "2", "--save-steps", "1"]
    train_cmd.main(argv + ["--max-length", "32", "--stride", "8"])
    err = capsys.readouterr().err
    assert "1 of 5 questions have no other paragraph in their article" in err
    assert "distractor paragraphs left out so that each question's windows fit one batch of --batch-size 1" in err
    assert train_log(out)
    with pytest.raises(SystemExit) as refused:
        train_cmd.main([*argv, "--max-length", "32", "--stride", "8", "--resume", "latest", "--distractors", "1"])
    assert refused.value.code == 2
    assert "--distractors 1 (the run began with 3)" in capsys.readouterr().err


# ---------------------------------------------------------------- the report's slices (item 8)


def test_context_length_slices_are_measured_against_what_the_windows_hold_not_the_data(bert_tokenizer):
    from qa.config.settings import WindowSettings
    from qa.data.windows import build_eval_windows, window_layout
    from qa.eval.report import context_length

    def layout(contexts: list[str]):
        columns = {"id": [str(i) for i in range(len(contexts))], "question": ["who won?"] * len(contexts)}
        columns["context"] = contexts
        return window_layout(build_eval_windows(columns, bert_tokenizer, WindowSettings(128, 32)), 128)

    short = layout(["the king won the war ."] * 3)  # every context far shorter than a window
    long = layout(["the king won the war . " * 60])
    room = 128 - 3 - len(bert_tokenizer("who won?", add_special_tokens=False)["input_ids"])
    assert short.capacity.tolist() == [room] * 3 and long.capacity.tolist() == [room]
    labels = {context_length(int(t), int(c)) for t, c in zip(short.context_tokens, short.capacity)}
    assert labels == {"up to half a window"}  # before: "one window (<= 6 tokens)", the data's own longest
    assert context_length(int(long.context_tokens[0]), int(long.capacity[0])) == "more than two windows"


# ---------------------------------------------------------------- small things users tripped over (items 12, 14)


def test_near_miss_contexts_marks_only_text_and_a_schema_without_null_passages():
    from qa.data.questions import QuestionProblem, QuestionRequest, question_from_json

    with pytest.raises(QuestionProblem) as problem:
        question_from_json({"question": "Who?", "Contexts": ["a"]}, max_top_k=5)
    assert problem.value.describe("") == "field 'contexts' is missing (found 'Contexts': field names are lower case)"
    for marks in ("\u0301\u0308", "\u20dd"):  # combining accents; an enclosing circle
        with pytest.raises(QuestionProblem) as problem:
            question_from_json({"question": "Who?", "context": marks}, max_top_k=5)
        assert "no visible character" in problem.value.problem
    schema = QuestionRequest.model_json_schema()
    assert schema["properties"]["contexts"]["type"] == "array" and "anyOf" not in schema["properties"]["contexts"]
    assert schema["properties"]["context"]["type"] == "string" and "default" not in schema["properties"]["context"]
    assert schema["oneOf"] == [{"required": ["context"]}, {"required": ["contexts"]}]


def test_help_names_what_input_lines_hold_and_what_precision_does_on_a_cpu(capsys):
    from qa.commands import predict as predict_cmd

    with pytest.raises(SystemExit):
        predict_cmd.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert '"contexts" (a list of passages)' in text and '"min_confidence"?' in text
    assert "inference (evaluate.py, predict.py) auto = bf16 weights where the CPU computes bf16 natively" in text
    assert "CPU: auto = fp32; bf16 runs CPU autocast" not in text


def test_fp16_on_a_cpu_says_it_is_slow(capsys):
    from qa.runtime.device import setup_runtime

    setup_runtime("fp16", device="cpu", for_inference=True)
    assert "fp16 autocast runs several times slower than fp32" in capsys.readouterr().err
