"""The evaluation report: slices that add up, the rules of each group, the files evaluate.py writes
(and does not with --report none), and the page in a real browser."""

import json

import numpy as np
import pytest
from helpers import write_squad_json
from serving_helpers import open_browser

from qa.commands import evaluate as evaluate_cmd
from qa.eval.metrics import f1_score
from qa.eval.report import ReportInputs, answer_length, answer_window, build_report, context_length, question_word


@pytest.mark.parametrize(
    ("question", "word"),
    [
        ("Who won?", "who"),
        ("In which year, and how, did it end?", "which"),
        ("Whose team?", "whose"),
        ("Name the somewhat late winner.", "other"),  # "what" inside a word is not the word
        ("WHEN did it start", "when"),
    ],
)
def test_the_question_word_is_the_first_one_that_is_a_word(question, word):
    assert question_word(question) == word


def test_answer_length_context_length_and_answer_window_buckets():
    assert [answer_length([t]) for t in ("Denver", "Denver Broncos", "the team of Denver", "a b c d e f g h")] == [
        "1 word",
        "2-3 words",
        "4-7 words",
        "8+ words",
    ]
    assert answer_length([]) == "no answer"
    assert context_length(100, 300).startswith("up to half") and context_length(301, 300).startswith("two")
    spans = [(0, 100), (60, 160)]
    assert answer_window(["x" * 10], [20], spans) == "in the first window"
    assert answer_window(["x" * 10], [120], spans) == "only in a later window"
    assert answer_window(["x" * 10], [155], spans) == "across a window boundary"


def random_inputs(rng, count=300):
    questions = [rng.choice(["Who won?", "When was it?", "How many?", "Name it."]) for _ in range(count)]
    golds = [[] if rng.random() < 0.2 else ["word " * int(rng.integers(1, 10))] for _ in range(count)]
    exact = (rng.random(count) < 0.5).astype(float)
    return ReportInputs(
        ids=[f"q{i}" for i in range(count)],
        questions=questions,
        contexts=["context " * 50] * count,
        gold_texts=golds,
        gold_starts=[[int(rng.integers(0, 200))] if g else [] for g in golds],
        predictions=["word" if rng.random() < 0.9 else "" for _ in range(count)],
        prediction_starts=[0] * count,
        scores=rng.random(count),
        exact=exact,
        f1=np.maximum(exact, rng.random(count) * 0.9),
        context_tokens=rng.integers(20, 900, size=count),
        window_spans=[[(0, 150), (100, 260)] for _ in range(count)],
        window_capacity=300,
        version_2=True,
        null_differences=rng.normal(size=count),
        span_f1=rng.random(count),
    )


def test_every_slice_group_adds_up_to_the_overall_counts_and_f1():
    inputs = random_inputs(np.random.default_rng(1))
    report = build_report(inputs)
    assert set(report["slices"]) == {"question_word", "answer_length", "context_length", "answer_window", "has_answer"}
    overall = report["overall"]
    for rows in report["slices"].values():
        assert sum(row["count"] for row in rows) == overall["count"] == 300
        weighted = sum(row["count"] * row["f1"] for row in rows) / overall["count"]
        assert weighted == pytest.approx(overall["f1"])
    assert sum(row["count"] for row in report["calibration"]["bins"]) == 300
    errors = report["errors"]
    assert len(errors) >= 20 and all(error["score"] >= 0 for error in errors)
    assert [error["score"] for error in errors] == sorted((error["score"] for error in errors), reverse=True)
    wrong_scores = sorted(inputs.scores[inputs.exact == 0], reverse=True)
    assert [error["score"] for error in errors] == pytest.approx(wrong_scores[: len(errors)])
    assert report["risk_coverage"]["points"][-1]["coverage"] == 1.0 and report["null_threshold_curve"]


@pytest.mark.slow
def test_evaluate_writes_the_report_beside_the_metrics_and_it_renders_in_chromium(arranged_model_dir, tmp_path):
    data = write_squad_json(tmp_path / "dev.json")
    out = tmp_path / "results"
    base = ["--ckpt", str(arranged_model_dir), "--validation-file", str(data), "--no-progress"]
    metrics = evaluate_cmd.main([*base, "--output-dir", str(out), "--max-length", "48", "--stride", "16"])
    report = json.loads((out / "report.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    assert report["overall"]["count"] == len(predictions) == metrics["num_examples"]
    assert report["overall"]["f1"] == pytest.approx(metrics["f1"])
    squad = json.loads(data.read_text())
    gold = {qa["id"]: qa for article in squad["data"] for p in article["paragraphs"] for qa in p["qas"]}
    by_word = {}  # an independent slicing of predictions.json, scored with the official F1
    for example_id, answer in predictions.items():
        word = question_word(gold[example_id]["question"])
        best = max(f1_score(answer, g["text"]) for g in gold[example_id]["answers"])
        by_word.setdefault(word, []).append(100 * best)
    sliced = {row["name"]: (row["count"], row["f1"]) for row in report["slices"]["question_word"]}
    assert sliced == {word: (len(f1s), pytest.approx(np.mean(f1s))) for word, f1s in by_word.items()}
    browser = open_browser()
    try:
        browser.get((out / "report.html").as_uri())
        from selenium.webdriver.common.by import By

        assert "exact match" in browser.find_element(By.ID, "headline").text
        run = browser.find_element(By.ID, "run").text  # what the report measured, at its top
        for shown in (arranged_model_dir.name, "dev.json", metrics["precision"], "48 tokens, stride 16", "UTC"):
            assert shown in run, (shown, run)
        assert (
            browser.title == f"Evaluation report: {arranged_model_dir.name} on dev.json ({len(predictions)} questions)"
        )
        captions = [caption.text for caption in browser.find_elements(By.TAG_NAME, "figcaption")]
        assert "F1 by question word" in captions and "F1 by length of the gold answer" in captions
        assert report["run"]["model"] == arranged_model_dir.name and report["run"]["data"] == "dev.json"
        charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
        assert len(charts) >= 6 and all(chart.size["height"] > 0 for chart in charts)
        assert len(browser.find_elements(By.CSS_SELECTOR, "#errors tr.error-row")) == len(report["errors"])
    finally:
        browser.quit()
    quiet = tmp_path / "quiet"
    evaluate_cmd.main([*base, "--output-dir", str(quiet), "--report", "none"])
    assert (quiet / "metrics.json").is_file() and not (quiet / "report.json").exists()
    assert not (quiet / "report.html").exists()


def test_report_html_escapes_every_text_from_the_data_and_marks_the_answers():
    from html.parser import HTMLParser

    from qa.eval.report_html import render_report

    hostile = "<script>alert('x')</script>"
    report = {
        "overall": {"count": 1, "exact_match": 0.0, "f1": 0.0},
        "calibration": {"ece": 0.5, "bins": [{"count": 1, "mean_score": 0.9, "accuracy": 0.0}]},
        "risk_coverage": {"area": 0.0, "points": [{"coverage": 1.0, "exact_match": 0.0}]},
        "slices": {f"slice {hostile}": [{"name": hostile, "count": 1, "f1": 0.0}]},
        "errors": [
            {
                "score": 0.9,
                "question": hostile,
                "prediction_context": {"text": f"a {hostile} b", "start": 2, "end": 2 + len(hostile)},
                "gold_context": {"text": 'say "it\'s" here', "start": 4, "end": 10},
            }
        ],
    }
    page = render_report(report, f"Report {hostile}")
    assert "<script" not in page

    class Marks(HTMLParser):
        def __init__(self):
            super().__init__()
            self.open, self.marks, self.texts = None, {}, []

        def handle_starttag(self, tag, attrs):
            if tag == "mark":
                self.open = dict(attrs)["class"]

        def handle_endtag(self, tag):
            self.open = None if tag == "mark" else self.open

        def handle_data(self, data):
            self.texts.append(data)
            if self.open:
                self.marks[self.open] = self.marks.get(self.open, "") + data

    parsed = Marks()
    parsed.feed(page)
    assert parsed.marks == {"prediction": hostile, "gold": '"it\'s"'}  # the answers, whole, as text
    assert sum(hostile in text for text in parsed.texts) >= 4  # title, heading, slice name, question


def test_context_snippets_are_cut_at_word_boundaries_with_an_ellipsis():
    from qa.eval.report import _snippet
    from qa.eval.report_html import _split

    context = (
        " ".join(f"word{n}" for n in range(60)) + " the Denver Broncos won " + " ".join(f"tail{n}" for n in range(60))
    )
    start = context.index("Denver")
    snippet = _snippet(context, start, start + len("Denver Broncos"))
    shown = _split(snippet)
    assert shown["answer"] == "Denver Broncos"
    assert shown["before"].startswith("\u2026 word") and shown["after"].endswith(" \u2026")
    before_words = shown["before"].removeprefix("\u2026 ").split()
    after_words = shown["after"].removesuffix(" \u2026").split()
    assert all(w in context.split() for w in before_words + after_words)  # no word cut in two
    whole = _split(_snippet("the Denver Broncos won", 4, 18))
    assert whole == {"before": "the ", "answer": "Denver Broncos", "after": " won"}  # nothing cut: no ellipsis
