import json
import shutil
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, SQUAD_ARTICLES, torchrun, write_squad_json

from qa.commands import evaluate as evaluate_cmd

CONTEXT = "The people played music in the church of the city. " * 8 + "In 2016 the Denver Broncos won the game."
ARTICLES = [
    {
        "title": "Football",
        "paragraphs": [
            {
                "context": CONTEXT,
                "qas": [
                    {"id": "q1", "question": "Who won?", "answers": [{"text": "Denver Broncos", "answer_start": 420}]},
                    {
                        "id": "q2",
                        "question": "Which team?",
                        "answers": [
                            {"text": "Broncos won", "answer_start": 427},
                            {"text": "Broncos", "answer_start": 427},
                        ],
                    },
                    {"id": "q3", "question": "Which city?", "answers": [{"text": "Denver", "answer_start": 420}]},
                ],
            }
        ],
    }
]


@pytest.mark.slow
def test_evaluate_py_scores_and_writes_its_files(arranged_model_dir, tmp_path):
    data = write_squad_json(tmp_path / "dev.json", ARTICLES)
    out = tmp_path / "eval"
    result = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            "--ckpt",
            str(arranged_model_dir),
            "--validation-file",
            str(data),
            "--output-dir",
            str(out),
            "--max-length",
            "64",
            "--stride",
            "16",
            "--save-nbest",
            "--no-progress",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    # Hand computation: the model answers "Denver Broncos" everywhere.
    # q1: EM 1, F1 1; q2: golds "Broncos won" (F1 1/2) and "Broncos" (F1 2*(1/2*1)/(1/2+1) = 2/3): EM 0, F1 2/3;
    # q3: "Denver": EM 0, F1 2/3.
    expected_em, expected_f1 = 100 / 3, 100 * (1 + 2 / 3 + 2 / 3) / 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["exact_match"] == pytest.approx(expected_em)
    assert metrics["f1"] == pytest.approx(expected_f1)
    assert metrics["num_examples"] == 3 and metrics["num_windows"] > 3
    assert set(metrics["seconds"]) == {"features", "inference", "decoding", "metric"}
    assert json.loads((out / "predictions.json").read_text()) == {q: "Denver Broncos" for q in ("q1", "q2", "q3")}
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    assert nbest["q1"][0]["text"] == "Denver Broncos" and len(nbest["q1"]) > 1
    assert f"exact_match = {expected_em:.2f}" in result.stdout


def test_max_eval_samples_and_default_output_dir(arranged_model_dir, tmp_path, capsys):
    data = write_squad_json(tmp_path / "dev.json", ARTICLES)
    model = tmp_path / "model"  # a copy: the result files land in the checkpoint, not in the shared fixture
    shutil.copytree(arranged_model_dir, model)
    metrics = evaluate_cmd.main(
        [
            "--ckpt",
            str(model),
            "--validation-file",
            str(data),
            "--max-eval-samples",
            "1",
            "--max-length",
            "64",
            "--stride",
            "16",
            "--no-progress",
        ]
    )
    assert metrics["num_examples"] == 1 and metrics["exact_match"] == 100.0
    assert json.loads((model / "predictions.json").read_text()) == {"q1": "Denver Broncos"}


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--stride", "400"], "--stride"),
        (["--batch-size", "0"], "--batch-size must be > 0"),
        (["--stride", "16", "--validation-file", "/nonexistent/dev.json"], "no such file"),
    ],
)
def test_bad_arguments_are_one_line_errors(arranged_model_dir, capsys, argv, fragment):
    with pytest.raises(SystemExit) as caught:
        evaluate_cmd.main(["--ckpt", str(arranged_model_dir), "--max-length", "64", *argv])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_window_shards_cover_every_window_exactly_once(world_size):
    import numpy as np

    from qa.eval.inference import shard_windows
    from qa.runtime.device import Runtime

    shards = [shard_windows(11, Runtime(None, "fp32", rank, world_size)) for rank in range(world_size)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(11))


@pytest.mark.slow
def test_torchrun_evaluation_scores_every_example_once(arranged_model_dir, tmp_path):

    data = write_squad_json(tmp_path / "dev.json", ARTICLES)
    single, double = tmp_path / "single", tmp_path / "double"
    common = [
        "--ckpt",
        str(arranged_model_dir),
        "--validation-file",
        str(data),
        "--max-length",
        "64",
        "--stride",
        "16",
        "--no-progress",
        "--save-nbest",
        "--precision",
        "fp32",  # sharded windows batch differently; bf16 kernels round differently per batch shape
    ]
    evaluate_cmd.main([*common, "--output-dir", str(single)])
    result = torchrun("evaluate.py", *common, "--output-dir", str(double))
    assert result.returncode == 0, result.stderr[-3000:]
    single_metrics = json.loads((single / "metrics.json").read_text())
    double_metrics = json.loads((double / "metrics.json").read_text())
    assert double_metrics["num_examples"] == 3 and double_metrics["num_windows"] == single_metrics["num_windows"]
    assert double_metrics["f1"] == pytest.approx(single_metrics["f1"])
    assert json.loads((double / "predictions.json").read_text()) == json.loads(
        (single / "predictions.json").read_text()
    )
    single_nbest = json.loads((single / "nbest_predictions.json").read_text())
    double_nbest = json.loads((double / "nbest_predictions.json").read_text())
    assert [c["text"] for c in double_nbest["q1"]] == [c["text"] for c in single_nbest["q1"]]


def fake_hub(monkeypatch, requested):
    """Serve the fixture as the hub's dataset, recording which (name, split) was asked for."""
    import datasets

    from qa.data.loading import load_examples

    def load_dataset(name, split):
        requested.append((name, split))
        import tempfile
        from pathlib import Path

        path = write_squad_json(Path(tempfile.mkdtemp()) / "hub.json", ARTICLES)
        return load_examples(file=path, for_training=False)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def test_hub_dataset_and_split_flags(arranged_model_dir, tmp_path, monkeypatch):
    requested = []
    fake_hub(monkeypatch, requested)
    metrics = evaluate_cmd.main(
        [
            "--ckpt",
            str(arranged_model_dir),
            "--dataset",
            "my/squad",
            "--split",
            "dev",
            "--output-dir",
            str(tmp_path),
            "--max-length",
            "64",
            "--stride",
            "16",
            "--no-progress",
        ]
    )
    assert requested == [("my/squad", "dev")]
    assert metrics["num_examples"] == 3


def test_distractors_read_each_question_with_other_paragraphs_of_its_article(arranged_model_dir, tmp_path):
    from qa.eval.distractors import distractor_sets

    broncos = "In 2016 the Denver Broncos won the super bowl."
    others = ["The people played music in the church.", "Paris is a city of music.", "The king was born in 1900."]
    paragraphs = [
        {
            "context": c,
            "qas": [
                {
                    "id": f"q{i}",
                    "question": "Who won?",
                    "answers": [{"text": "Denver Broncos", "answer_start": c.index("Denver Broncos")}]
                    if "Denver" in c
                    else [{"text": c.split()[1], "answer_start": c.index(c.split()[1])}],
                }
            ],
        }
        for i, c in enumerate([broncos, *others])
    ]
    data = tmp_path / "dev.json"
    data.write_text(json.dumps({"version": "1.1", "data": [{"title": "one", "paragraphs": paragraphs}]}))
    out = tmp_path / "out"
    metrics = evaluate_cmd.main(
        [
            "--ckpt",
            str(arranged_model_dir),
            "--validation-file",
            str(data),
            "--distractors",
            "2",
            "--output-dir",
            str(out),
            "--no-progress",
        ]
    )
    assert metrics["distractors"] == 2 and metrics["passages_per_question"] == 3 and metrics["num_examples"] == 4
    # The arranged model answers "Denver Broncos" from whichever passage holds it: right for q0 only, and the
    # right passage for q0 and for none of the others (their passages hold Denver only when it was drawn).
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions["q0"] == "Denver Broncos" and metrics["exact_match"] == 25.0
    from qa.data.loading import load_examples

    sets = distractor_sets(load_examples(file=str(data), for_training=False), 2)
    assert sets == distractor_sets(load_examples(file=str(data), for_training=False), 2)  # seeded
    for item in sets:
        assert len(set(item.question.passages)) == 3 and item.question.passages[item.gold_passage] in (broncos, *others)


@pytest.mark.slow
def test_torchrun_evaluation_with_distractors_matches_one_process(arranged_model_dir, tmp_path):

    # One article of every paragraph: each question is read with one other paragraph.
    merged = [{"title": "All", "paragraphs": [p for article in SQUAD_ARTICLES for p in article["paragraphs"]]}]
    data = write_squad_json(tmp_path / "dev.json", merged)
    single, double = tmp_path / "single", tmp_path / "double"
    common = ["--ckpt", str(arranged_model_dir), "--validation-file", str(data), "--distractors", "1"]
    # fp32: sharded windows make other batches, and bf16 kernels (the default on a native-bf16 CPU) round
    # differently per batch shape, which is not what this compares
    common += ["--max-length", "64", "--stride", "16", "--no-progress", "--precision", "fp32"]
    evaluate_cmd.main([*common, "--output-dir", str(single)])
    result = torchrun("evaluate.py", *common, "--output-dir", str(double))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((double / "predictions.json").read_text()) == json.loads(
        (single / "predictions.json").read_text()
    )
    assert json.loads((double / "metrics.json").read_text()) == json.loads((single / "metrics.json").read_text())


def test_the_checkpoint_is_checked_and_its_window_limit_read_once(arranged_model_dir, tmp_path, monkeypatch):
    """evaluate.py refuses a checkpoint before reading the data, and load_reader does not check it again:
    the window limit (read off a meta-device copy of the model) is read once, the config loaded once."""
    import qa.model.loading as loading

    calls = {"position_limit": 0, "load_config": 0}
    for name in calls:
        real = getattr(loading, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(loading, name, counted)
    data = write_squad_json(tmp_path / "dev.json")
    evaluate_cmd.main(
        ["--ckpt", str(arranged_model_dir), "--validation-file", str(data), "--output-dir", str(tmp_path)]
    )
    assert calls == {"position_limit": 1, "load_config": 1}


def test_two_evaluations_into_one_directory_at_once_leave_one_whole_set(tmp_path, monkeypatch):
    """One evaluation is held between two of its files while another writes all of its own: with the
    directory locked the second waits, and the directory ends with the second's whole set, never the
    first's predictions beside the second's metrics."""
    import threading

    import qa.eval.evaluator as evaluator

    real_write = evaluator.write_json
    first_file_written, go_on = threading.Event(), threading.Event()

    def paused_write(path, value, **options):
        real_write(path, value, **options)
        if value.get("who") == "first" and threading.current_thread().name == "first":
            first_file_written.set()
            go_on.wait(timeout=60)

    monkeypatch.setattr(evaluator, "write_json", paused_write)

    def results(who):
        return {"predictions.json": {"who": who}, "metrics.json": {"who": who}}

    first = threading.Thread(target=evaluator.write_result_files, args=(tmp_path, results("first")), name="first")
    first.start()
    assert first_file_written.wait(timeout=60)
    second = threading.Thread(target=evaluator.write_result_files, args=(tmp_path, results("second")))
    second.start()
    second.join(timeout=1)  # with the lock it is still waiting here; without, it has written both files
    go_on.set()
    first.join(timeout=60)
    second.join(timeout=60)
    written = {name: json.loads((tmp_path / name).read_text())["who"] for name in ("predictions.json", "metrics.json")}
    assert len(set(written.values())) == 1, written


def test_a_model_whose_limit_is_under_the_default_window_is_refused_in_one_line_by_every_entry(tmp_path, capsys):
    from helpers import make_tiny_model_dir

    from qa import pipeline
    from qa.commands import predict as predict_cmd
    from qa.commands import train as train_cmd

    model = make_tiny_model_dir(tmp_path / "short", positions=64)
    data = write_squad_json(tmp_path / "dev.json")
    expected = f"error: --max-length 384 is longer than the model {model} accepts (64 positions)"
    calls = [
        lambda: predict_cmd.main(["--ckpt", str(model), "--question", "Who?", "--context", "The Broncos won."]),
        lambda: evaluate_cmd.main(["--ckpt", str(model), "--validation-file", str(data)]),
        lambda: train_cmd.main(["--model", str(model), "--train-file", str(data), "--output-dir", str(tmp_path / "o")]),
    ]
    for call in calls:
        with pytest.raises(SystemExit) as caught:
            call()
        assert caught.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == expected
    with pytest.raises(ValueError, match="max_seq_len 384 is longer than the model"):
        pipeline(model=str(model))
    assert not (tmp_path / "o").exists()
