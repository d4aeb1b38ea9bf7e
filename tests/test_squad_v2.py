"""SQuAD v2.0: unanswerable questions in data, decoding, the threshold, the metric and the commands."""

import copy
import json
import shutil

import numpy as np
import pytest
from helpers import SQUAD_ARTICLES, tiny_train_argv, write_squad_json

from qa.commands import evaluate as evaluate_cmd
from qa.commands import predict as predict_cmd
from qa.commands import train as train_cmd
from qa.data.loading import load_examples, load_training_examples
from qa.data.windows import NOT_CONTEXT
from qa.errors import QAError
from qa.eval.decoding import decode_spans
from qa.eval.metrics import best_null_threshold, squad_v2_scores, v2_raw_scores
from qa.model.carried import store_carried

CONTEXT = "In 2016 the Denver Broncos won the super bowl."


def v2_articles(copies=1):
    """The test articles with one unanswerable question (p3); with ``copies``, every question that many
    times (ids suffixed -1, -2, ...): 25 copies give the 25 unanswerable questions a threshold is tuned on."""
    articles = copy.deepcopy(SQUAD_ARTICLES)
    articles[0]["paragraphs"][0]["qas"].append(
        {
            "id": "p3",
            "question": "Who is the mayor?",
            "answers": [],
            "is_impossible": True,
            "plausible_answers": [{"text": "Paris", "answer_start": 0}],
        }
    )
    if copies > 1:
        for article in articles:
            for paragraph in article["paragraphs"]:
                paragraph["qas"] = [
                    {**qa, "id": f"{qa['id']}-{n}"} for n in range(1, copies + 1) for qa in paragraph["qas"]
                ]
    return articles


def ids_of(articles):
    return {qa["id"] for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]}


# ---------------------------------------------------------------- data


def test_unanswerable_questions_load_for_training_and_evaluation(tmp_path):
    path = write_squad_json(tmp_path / "v2.json", v2_articles())
    for for_training in (True, False):
        examples = load_examples(file=path, for_training=for_training)
        row = examples[examples["id"].index("p3")]
        assert row["answers"] == {"text": [], "answer_start": []}  # plausible_answers is never a target


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"is_impossible": True}, "must be empty"),
        ({"answers": [], "is_impossible": False}, "not marked is_impossible"),
        ({"is_impossible": "yes"}, "true or false"),
    ],
)
def test_inconsistent_impossible_flags_are_one_line_errors(tmp_path, change, fragment):
    articles = v2_articles()
    articles[0]["paragraphs"][0]["qas"][0].update(change)
    with pytest.raises(QAError, match=fragment) as caught:
        load_examples(file=write_squad_json(tmp_path / "bad.json", articles), for_training=False)
    assert "'p1'" in str(caught.value)


def test_flat_records_with_empty_answers_are_unanswerable(tmp_path):
    path = tmp_path / "flat.jsonl"
    path.write_text(
        json.dumps({"id": "u", "question": "q?", "context": CONTEXT, "answers": {"text": [], "answer_start": []}})
    )
    assert load_examples(file=path, for_training=True)["answers"] == [{"text": [], "answer_start": []}]


def test_several_training_files_train_on_their_union_with_unique_ids(tmp_path):
    first = write_squad_json(tmp_path / "a.json")
    second = write_squad_json(tmp_path / "b.json", v2_articles()[:1])
    other = copy.deepcopy(v2_articles()[:1])
    for qa in other[0]["paragraphs"][0]["qas"]:
        qa["id"] = "x-" + qa["id"]
    third = write_squad_json(tmp_path / "c.json", other)
    assert len(load_training_examples("squad", [str(first), str(third)])) == 4 + 3
    with pytest.raises(QAError, match="duplicate id.*a.json"):
        load_training_examples("squad", [str(first), str(second)])


# ---------------------------------------------------------------- decoding and threshold


def arranged(null_logit):
    """One window: CLS at 0, question at 1-2, context at 3-7 whose best span is 4..5 (score 2 + 2 = 4)."""
    start = np.full((1, 8), -5.0)
    end = np.full((1, 8), -5.0)
    start[0, 4], end[0, 5] = 2.0, 2.0
    start[0, 0] = end[0, 0] = null_logit
    offsets = np.full((1, 8, 2), NOT_CONTEXT)
    for position, (a, b) in zip(range(3, 8), [(0, 2), (3, 7), (8, 11), (12, 16), (17, 20)]):
        offsets[0, position] = (a, b)
    return start, end, offsets


@pytest.mark.parametrize(
    ("null_logit", "threshold", "no_answer"), [(3.0, 0.0, True), (1.0, 0.0, False), (3.0, 2.5, False)]
)
def test_null_score_against_the_best_span_and_the_threshold(null_logit, threshold, no_answer):
    start, end, offsets = arranged(null_logit)
    context = "aa bbbb ccc dddd eee"
    (prediction,) = decode_spans(
        start,
        end,
        offsets,
        np.array([0]),
        [context],
        with_nbest=True,
        null_positions=np.array([0]),
        null_threshold=threshold,
    )
    assert prediction.null_score == 2 * null_logit and prediction.score == 4.0
    assert prediction.no_answer is no_answer
    assert prediction.answer == ("" if no_answer else "bbbb ccc")
    texts = [candidate.text for candidate in prediction.nbest]
    assert "" in texts and (texts[0] == "") is no_answer  # the empty answer ranks where it belongs
    assert sum(candidate.probability for candidate in prediction.nbest) == pytest.approx(1.0)


def test_example_null_score_is_the_minimum_over_its_windows():
    a, b = arranged(3.0), arranged(1.0)
    start, end, offsets = (np.concatenate([x, y]) for x, y in zip(a, b))
    (prediction,) = decode_spans(
        start,
        end,
        offsets,
        np.array([0, 0]),
        ["aa bbbb ccc dddd eee"],
        null_positions=np.array([0, 0]),
        null_threshold=0.0,
    )
    assert prediction.null_score == 2.0 and prediction.no_answer is False


def test_model_without_threshold_always_answers():
    start, end, offsets = arranged(50.0)
    (prediction,) = decode_spans(
        start,
        end,
        offsets,
        np.array([0]),
        ["aa bbbb ccc dddd eee"],
        with_nbest=True,
        null_positions=np.array([0]),
        null_threshold=None,
    )
    assert prediction.answer == "bbbb ccc" and "" not in [c.text for c in prediction.nbest]


def brute_force_best(differences, f1_answered, has_answer):
    best = (-1.0, None)
    for threshold in [-np.inf, *sorted(set(differences))]:
        total = sum(
            f1 if d <= threshold else float(not has) for d, f1, has in zip(differences, f1_answered, has_answer)
        )
        if total > best[0] + 1e-12:
            best = (total, threshold)
    return 100.0 * best[0] / len(differences)


@pytest.mark.parametrize("seed", range(20))
def test_threshold_search_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 40))
    differences = np.round(rng.normal(size=size), 1)  # rounding makes ties
    f1_answered = rng.choice([0.0, 0.5, 1.0], size=size)
    has_answer = rng.random(size) < 0.5
    f1_answered[~has_answer] = 0.0
    threshold, best_f1 = best_null_threshold(differences, f1_answered, has_answer)
    assert best_f1 == pytest.approx(brute_force_best(differences, f1_answered, has_answer))
    achieved = np.where(differences <= threshold, f1_answered, (~has_answer).astype(float)).mean() * 100
    assert achieved == pytest.approx(best_f1)


# ---------------------------------------------------------------- the official v2.0 metric


def test_v2_metric_keys_by_hand_on_edge_cases():
    # a: answerable, right; b: answerable, abstained (0); c: unanswerable, abstained (1); d: unanswerable, answered (0)
    predictions = {"a": "Denver Broncos", "b": "", "c": "", "d": "Paris"}
    references = {"a": ["Denver Broncos"], "b": ["2016"], "c": [], "d": []}
    na_probs = {"a": 0.1, "b": 0.9, "c": 0.8, "d": 0.2}
    scores = squad_v2_scores(predictions, references, na_probs)
    assert scores["exact"] == scores["f1"] == 50.0 and scores["total"] == 4
    assert (scores["HasAns_exact"], scores["HasAns_total"], scores["NoAns_exact"], scores["NoAns_total"]) == (
        50.0,
        2,
        50.0,
        2,
    )
    # sweep by na_prob: start 2 (abstain all); a +1 -> 3 at 0.1; d -1 -> 2; c 0; b +0 -> best 3/4 at 0.1
    assert (scores["best_exact"], scores["best_exact_thresh"], scores["best_f1"], scores["best_f1_thresh"]) == (
        75.0,
        0.1,
        75.0,
        0.1,
    )

    none_answerable = squad_v2_scores({"c": "", "d": "x"}, {"c": [], "d": []}, {"c": 0.5, "d": 0.5})
    assert (
        none_answerable["exact"] == 50.0
        and "HasAns_exact" not in none_answerable
        and none_answerable["NoAns_total"] == 2
    )
    all_answerable = squad_v2_scores({"a": "", "b": "2016"}, {"a": ["x"], "b": ["2016"]}, {"a": 0.2, "b": 0.3})
    assert all_answerable["f1"] == 50.0 and "NoAns_exact" not in all_answerable
    assert v2_raw_scores({"a": ""}, {"a": ["Paris"]}) == ({"a": 0}, {"a": 0.0})  # empty answer to an answerable one


# ---------------------------------------------------------------- commands


def test_stored_threshold_reaches_predict_and_the_flag_overrides_it(arranged_model_dir, tmp_path, capsys):
    model = tmp_path / "v2-model"
    shutil.copytree(arranged_model_dir, model)
    argv = ["--ckpt", str(model), "--question", "Who won?", "--context", CONTEXT, "--json"]
    predict_cmd.main(argv)
    assert "no_answer" not in json.loads(capsys.readouterr().out)  # no threshold: v1.1 output, always answers
    store_carried(model, null_threshold=-1e6)  # any null score beats any span
    predict_cmd.main(argv)
    assert json.loads(capsys.readouterr().out)["no_answer"] is True
    predict_cmd.main([*argv[:-1]])
    assert capsys.readouterr().out.startswith("(no answer")
    predict_cmd.main([*argv, "--null-threshold", "1e6", "--top-k", "2"])
    answers = json.loads(capsys.readouterr().out)
    assert answers[0] == {**answers[0], "answer": "Denver Broncos", "no_answer": False}


@pytest.mark.slow
def test_train_stores_the_tuned_threshold_and_evaluate_writes_official_files(tiny_model_dir, tmp_path):
    data = write_squad_json(tmp_path / "v2.json", v2_articles(copies=25))
    out = tmp_path / "out"
    argv = tiny_train_argv(tiny_model_dir, out, tmp_path / "cache", "--max-steps", "2", "--batch-size", "4")
    summary = train_cmd.main([*argv, "--train-file", str(data), "--validation-file", str(data)])
    metrics = summary["metrics"]
    stored = json.loads((out / "config.json").read_text())["qa_null_threshold"]
    assert stored == metrics["null_threshold"] == metrics["best_null_threshold"]
    assert metrics["f1"] == pytest.approx(metrics["best_null_threshold_f1"])  # predictions use the tuned threshold
    evaluated = evaluate_cmd.main(
        [
            "--ckpt",
            str(out),
            "--validation-file",
            str(data),
            "--max-length",
            "48",
            "--stride",
            "16",
            "--output-dir",
            str(tmp_path / "e"),
            "--no-progress",
        ]
    )
    assert evaluated["null_threshold"] == stored
    predictions = json.loads((tmp_path / "e" / "predictions.json").read_text())
    na_probs = json.loads((tmp_path / "e" / "na_prob.json").read_text())
    assert set(predictions) == set(na_probs) == ids_of(v2_articles(copies=25))
    assert all((na_probs[i] > 0.5) == (predictions[i] == "") for i in predictions)  # consistent with the threshold
    official = {
        "exact",
        "f1",
        "total",
        "HasAns_exact",
        "HasAns_f1",
        "HasAns_total",
        "NoAns_exact",
        "NoAns_f1",
        "NoAns_total",
        "best_exact",
        "best_exact_thresh",
        "best_f1",
        "best_f1_thresh",
    }
    assert official <= set(evaluated)
    assert evaluated["exact_match"] == evaluated["exact"]  # v1.1's key too: one name for exact match
    references = {
        qa["id"]: [a["text"] for a in qa["answers"]]
        for a in v2_articles(copies=25)
        for p in a["paragraphs"]
        for qa in p["qas"]
    }
    recomputed = squad_v2_scores(predictions, references, na_probs)
    assert {key: evaluated[key] for key in official} == recomputed


@pytest.mark.slow
def test_hub_squad_v2_trains_on_train_and_tunes_on_validation(tiny_model_dir, tmp_path, monkeypatch):
    import datasets

    requested = []

    def load_dataset(name, split):
        requested.append((name, split))
        articles = v2_articles(copies=25 if split == "validation" else 1)
        return load_examples(file=write_squad_json(tmp_path / f"{split}.json", articles), for_training=False)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    out = tmp_path / "out"
    argv = tiny_train_argv(tiny_model_dir, out, tmp_path / "cache", "--max-steps", "1", "--batch-size", "4")
    summary = train_cmd.main([*argv, "--dataset", "squad_v2"])
    assert requested == [("squad_v2", "train"), ("squad_v2", "validation")]
    assert summary["metrics"]["NoAns_total"] == 25 and (out / "na_prob.json").is_file()
    assert "qa_null_threshold" in json.loads((out / "config.json").read_text())


# ---------------------------------------------------------------- hardening of the v2 path


def only(kind):
    """v2_articles() with only the answerable (kind=True) or only the unanswerable questions."""
    articles = v2_articles()
    for article in articles:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = [qa for qa in paragraph["qas"] if bool(qa["answers"]) is kind]
        article["paragraphs"] = [p for p in article["paragraphs"] if p["qas"]]
    return [a for a in articles if a["paragraphs"]]


@pytest.mark.slow
def test_a_threshold_is_never_inherited_by_a_model_fine_tuned_further(tiny_model_dir, tmp_path, capsys):
    v2_model = tmp_path / "v2-model"
    shutil.copytree(tiny_model_dir, v2_model)
    store_carried(v2_model, null_threshold=-1e6)  # it would abstain on every question
    v1 = write_squad_json(tmp_path / "v1.json")
    for extra in (["--no-eval"], []):
        out = tmp_path / f"out{len(extra)}"
        argv = tiny_train_argv(v2_model, out, tmp_path / "cache", "--max-steps", "1", "--batch-size", "4", *extra)
        summary = train_cmd.main([*argv, "--train-file", str(v1), "--validation-file", str(v1)])
        assert "qa_null_threshold" not in json.loads((out / "config.json").read_text())
        assert "carried the null threshold -1000000.0000; dropped" in capsys.readouterr().err
        if not extra:
            assert "best_null_threshold" not in summary["metrics"]  # v1.1 data: v1.1 scoring
        predict_cmd.main(["--ckpt", str(out), "--question", "Who won?", "--context", CONTEXT, "--json"])
        answer = json.loads(capsys.readouterr().out)
        assert "no_answer" not in answer and answer["answer"]  # a model trained on v1.1 always answers


@pytest.mark.slow
@pytest.mark.parametrize(
    ("validation", "counts"),
    [
        (lambda: only(True), "4 answerable and 0 unanswerable"),
        (lambda: only(False), "0 answerable and 1 unanswerable"),
        (lambda: v2_articles(copies=24), "96 answerable and 24 unanswerable"),
    ],
)
def test_a_threshold_needs_enough_questions_of_both_kinds_even_when_v2_is_asked_for(
    tiny_model_dir, tmp_path, capsys, validation, counts
):
    train = write_squad_json(tmp_path / "v2.json", v2_articles())
    data = write_squad_json(tmp_path / "validation.json", validation())
    common = ["--max-steps", "1", "--batch-size", "4", "--train-file", str(train), "--validation-file", str(data)]
    for asked in ([], ["--version-2-with-negative"]):
        out = tmp_path / f"out{len(asked)}"
        summary = train_cmd.main([*tiny_train_argv(tiny_model_dir, out, tmp_path / "cache", *common, *asked)])
        lines = [line for line in capsys.readouterr().err.splitlines() if "null threshold" in line]
        assert lines == [
            "no null threshold stored: tuning one needs at least 25 answerable and 25 unanswerable validation "
            f"questions, and there are {counts} validation questions, so the model always answers. Validate on "
            "more of both kinds, or give one with --null-threshold"
        ]
        assert "qa_null_threshold" not in json.loads((out / "config.json").read_text())
        assert summary["metrics"]["null_threshold"] is None and "best_null_threshold" in summary["metrics"]


def test_the_tuned_threshold_is_kept_from_25_questions_of_each_kind():
    from qa.eval.scoring import tuned_threshold

    assert tuned_threshold(-1.5, 25, 25) == -1.5
    assert tuned_threshold(-1.5, 1000, 24) is None and tuned_threshold(-1.5, 24, 1000) is None
    assert tuned_threshold(-1.5, 29, 1) is None  # the run: one unanswerable question


def test_unanswerable_questions_written_without_answers_are_accepted(tmp_path):
    articles = v2_articles()
    del articles[0]["paragraphs"][0]["qas"][2]["answers"]  # nested: is_impossible true, no answers key
    nested = load_examples(file=write_squad_json(tmp_path / "nested.json", articles), for_training=True)
    assert nested[nested["id"].index("p3")]["answers"] == {"text": [], "answer_start": []}
    flat = tmp_path / "flat.jsonl"
    flat.write_text(
        json.dumps({"id": "u", "question": "q?", "context": CONTEXT, "answers": []})
        + "\n"
        + json.dumps({"id": "v", "question": "q?", "context": CONTEXT, "is_impossible": True})
    )
    assert load_examples(file=flat, for_training=True)["answers"] == [{"text": [], "answer_start": []}] * 2


def test_each_evaluation_leaves_its_own_complete_set_of_files(arranged_model_dir, tmp_path):
    out = tmp_path / "e"
    common = ["--ckpt", str(arranged_model_dir), "--output-dir", str(out), "--max-length", "64", "--stride", "16"]
    evaluate_cmd.main([*common, "--validation-file", str(write_squad_json(tmp_path / "v2.json", v2_articles()))])
    assert (out / "na_prob.json").is_file()
    evaluate_cmd.main([*common, "--validation-file", str(write_squad_json(tmp_path / "v1.json")), "--save-nbest"])
    assert sorted(path.name for path in out.iterdir()) == [
        "metrics.json",
        "nbest_predictions.json",
        "predictions.json",
        "report.html",
        "report.json",
    ]
    evaluate_cmd.main([*common, "--validation-file", str(tmp_path / "v1.json")])
    assert not (out / "nbest_predictions.json").exists()


def test_na_prob_is_above_one_half_exactly_for_unanswered_questions_with_or_without_a_threshold(
    arranged_model_dir, tmp_path
):
    data = write_squad_json(tmp_path / "v2.json", v2_articles())
    out = tmp_path / "e"
    argv = ["--ckpt", str(arranged_model_dir), "--validation-file", str(data), "--output-dir", str(out)]
    for extra in ([], ["--null-threshold=-1e6"], ["--null-threshold=0"]):
        metrics = evaluate_cmd.main([*argv, "--max-length", "64", "--stride", "16", "--no-progress", *extra])
        predictions = json.loads((out / "predictions.json").read_text())
        na_probs = json.loads((out / "na_prob.json").read_text())
        assert all((na_probs[i] > 0.5) == (predictions[i] == "") for i in predictions), (extra, na_probs)
        if not extra:  # a model without a threshold answers every question it finds a span for
            assert metrics["null_threshold"] is None and all(predictions.values())
            assert max(na_probs.values()) < 0.5
        if extra == ["--null-threshold=-1e6"]:  # any null score beats any span: no answers at all
            assert set(predictions.values()) == {""} and min(na_probs.values()) > 0.5


def test_a_stored_threshold_that_declines_most_questions_is_named_with_its_override(tiny_model_dir, tmp_path, capsys):
    v2_model = tmp_path / "v2-model"
    shutil.copytree(tiny_model_dir, v2_model)
    store_carried(v2_model, null_threshold=-1e6)  # a v2 model's threshold met by v1.1 data: every question declined
    v1 = write_squad_json(tmp_path / "v1.json")
    argv = ["--ckpt", str(v2_model), "--validation-file", str(v1), "--output-dir", str(tmp_path / "r"), "--no-progress"]
    evaluate_cmd.main(argv)
    notes = [line for line in capsys.readouterr().err.splitlines() if "declined" in line]
    assert len(notes) == 1 and "(-1000000.0000) declined" in notes[0] and "--null-threshold" in notes[0], notes
    evaluate_cmd.main([*argv, "--null-threshold", "1e6"])  # overridden: answers everything, no note
    assert "declined" not in capsys.readouterr().err
