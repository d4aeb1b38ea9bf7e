"""Evaluation during training, the best model, early stopping, TensorBoard, the curves and the model card."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT, make_arranged_model_dir, sigkill_after_checkpoint, tiny_train_argv, train_log
from safetensors.torch import load_file

from qa.commands import train as train_cmd
from qa.train.selection import BestModel

CONTEXTS = [
    "In 2016 the Denver Broncos won the super bowl.",
    "The Denver Broncos played in 2016 at home.",
    "In 2016 the Broncos of Denver won again.",
    "Denver Broncos fans in 2016 were many.",
]


def squad_lines(path, answer, unanswerable=False, copies=1):
    """The four contexts, each asked "Who won in 2016?", answered by ``answer`` where it occurs (else "Broncos");
    with ``unanswerable`` each also asked "Who lost?" (no answer); every question ``copies`` times."""
    rows = []
    for copy in range(copies):
        for index, context in enumerate(CONTEXTS):
            text = answer if answer in context else "Broncos"
            answers = {"text": [text], "answer_start": [context.index(text)]}
            rows.append(
                {"id": f"q{index}-{copy}", "question": "Who won in 2016?", "context": context, "answers": answers}
            )
        if unanswerable:
            empty = {"text": [], "answer_start": []}
            rows += [
                {"id": f"n{i}-{copy}", "question": "Who lost?", "context": c, "answers": empty}
                for i, c in enumerate(CONTEXTS)
            ]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


@pytest.fixture(scope="module")
def falling(tmp_path_factory):
    """A run whose validation F1 is high at its first evaluation and falls after: the arranged model (which
    answers "Denver Broncos", the validation gold) trained at a high rate to answer "2016" instead."""
    root = tmp_path_factory.mktemp("falling")
    model = make_arranged_model_dir(root / "arranged")
    train = squad_lines(root / "train.jsonl", "2016")
    validation = squad_lines(root / "validation.jsonl", "Denver Broncos")

    def argv(out, *extra):
        return tiny_train_argv(
            model,
            out,
            root / "cache",
            *("--train-file", str(train), "--validation-file", str(validation), "--lr", "3e-2"),
            *("--batch-size", "2", "--max-steps", "12", "--eval-strategy", "steps", "--eval-steps", "2"),
            *("--log-steps", "2", *extra),
        )

    return argv


def evaluations(out):
    return [(row["step"], row["eval_f1"]) for row in train_log(out) if "eval_f1" in row]


def weights(directory):
    return load_file(str(directory / "model.safetensors"))


def same_weights(a, b):
    return a.keys() == b.keys() and all((a[name] == b[name]).all() for name in a)


# ---------------------------------------------------------------- the selection rules, on recorded histories


@pytest.mark.parametrize(
    ("values", "patience", "threshold", "best_step", "stops_at"),
    [
        ([50.0, 60.0, 55.0, 58.0], None, 0.0, 2, None),  # up then down: the peak
        ([50.0, 60.0, 60.0, 60.0], 2, 0.0, 2, 4),  # ties are not improvements; the first of equals stays best
        ([50.0, 60.0, 60.5, 60.9], 2, 1.0, 4, 4),  # small gains: a new best, but no reset of the patience
        ([50.0, 49.0, 70.0, 69.0, 68.0], 2, 0.0, 3, 5),  # a late jump resets the patience
    ],
)
def test_best_model_and_early_stopping_rules(values, patience, threshold, best_step, stops_at):
    best = BestModel("f1", patience, threshold)
    stopped = None
    for step, value in enumerate(values, start=1):
        best.record(step, float(step), {"f1": value, "exact_match": value - 10})
        if stopped is None and best.should_stop:
            stopped = step
    assert (best.best_step, best.best_value, stopped) == (best_step, values[best_step - 1], stops_at)
    again = BestModel("f1", patience, threshold)
    again.load_state_dict(json.loads(json.dumps(best.state_dict())))  # survives a checkpoint
    assert again == best


def test_exact_match_selects_on_v2_keys_too():
    best = BestModel("exact_match")
    best.record(1, 1.0, {"exact": 40.0, "f1": 90.0})
    best.record(2, 2.0, {"exact": 45.0, "f1": 50.0})
    assert best.best_step == 2


# ---------------------------------------------------------------- real runs


@pytest.mark.slow
def test_the_final_model_is_the_best_evaluations_and_pruning_keeps_it(falling, tmp_path):
    out = tmp_path / "out"
    summary = train_cmd.main(falling(out, "--save-total-limit", "1"))
    history = evaluations(out)
    assert [step for step, _ in history] == [2, 4, 6, 8, 10, 12]
    best_step, best_f1 = max(history, key=lambda item: item[1])  # the first of equal maxima
    assert best_step == 2 and best_f1 > history[-1][1]  # F1 fell after the first evaluation
    # --save-total-limit 1 keeps the newest checkpoint, and the best besides
    assert sorted(path.name for path in out.glob("checkpoint-*")) == ["checkpoint-12", "checkpoint-2"]
    assert same_weights(weights(out), weights(out / "checkpoint-2"))
    assert not same_weights(weights(out), weights(out / "checkpoint-12"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["f1"] == best_f1 == summary["metrics"]["f1"]
    assert metrics["best_model"] == {"step": 2, "metric": "f1", "value": best_f1, "evaluations": 6, "selected": "best"}
    assert json.loads((out / "checkpoint-2" / "metrics.json").read_text())["f1"] == best_f1

    last = tmp_path / "last"
    train_cmd.main(falling(last, "--no-load-best-model-at-end"))
    assert same_weights(weights(last), weights(last / "checkpoint-12"))
    assert json.loads((last / "metrics.json").read_text())["step"] == 12


@pytest.mark.slow
def test_early_stopping_stops_after_patience_evaluations_without_improvement(falling, tmp_path, capsys):
    out = tmp_path / "out"
    summary = train_cmd.main(falling(out, "--early-stopping-patience", "2"))
    assert summary["steps"] == 6 and [step for step, _ in evaluations(out)] == [2, 4, 6]
    assert "early stopping at step 6: 2 evaluations without a f1 above" in capsys.readouterr().err
    assert (out / "checkpoint-6").is_dir()  # saved as on SIGTERM
    assert same_weights(weights(out), weights(out / "checkpoint-2"))


@pytest.mark.slow
def test_a_killed_and_resumed_run_ends_with_the_same_history_best_step_and_weights(falling, tmp_path):
    whole = tmp_path / "whole"
    train_cmd.main(falling(whole, "--save-total-limit", "2"))
    killed = tmp_path / "killed"
    sigkill_after_checkpoint(6, falling(killed, "--save-total-limit", "2"))  # right after step 6's evaluation
    train_cmd.main(falling(killed, "--save-total-limit", "2", "--resume"))
    assert evaluations(killed) == evaluations(whole)
    assert (killed / "predictions.json").read_text() == (whole / "predictions.json").read_text()

    def scores(out):  # the metrics without their timings
        return {k: v for k, v in json.loads((out / "metrics.json").read_text()).items() if k != "seconds"}

    assert scores(killed) == scores(whole)
    assert same_weights(weights(killed), weights(whole))
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == sorted(p.name for p in whole.glob("checkpoint-*"))


@pytest.mark.slow
def test_tensorboard_events_curves_and_a_model_card_that_the_hub_parses(falling, tmp_path, capsys):
    from huggingface_hub import ModelCard
    from matplotlib.image import imread
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "out"
    train_cmd.main(falling(out, "--report-to", "tensorboard"))
    # One line on standard output: where the model is, and its evaluation's scores with their step.
    metrics = json.loads((out / "metrics.json").read_text())
    assert capsys.readouterr().out.splitlines() == [
        json.dumps(
            {
                "model": str(out),
                "steps": 12,
                "exact_match": metrics["exact_match"],
                "f1": metrics["f1"],
                "evaluated_at_step": metrics["step"],
            }
        )
    ]
    published = {path.name for path in out.iterdir() if not path.name.startswith("checkpoint-")}
    assert not {name for name in published if name.startswith(".") or name.endswith(".tmp")}, published
    events = EventAccumulator(str(out / "runs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/learning_rate", "train/grad_norm", "train/windows_per_second"}
    assert expected | {"eval/f1", "eval/exact_match", "eval/seconds"} <= tags, tags
    assert [event.step for event in events.Scalars("eval/f1")] == [2, 4, 6, 8, 10, 12]
    assert [event.value for event in events.Scalars("eval/f1")] == pytest.approx([f1 for _, f1 in evaluations(out)])
    logged = [row["grad_norm"] for row in train_log(out) if "loss" in row]
    assert all(norm > 0 for norm in logged)  # before clipping, so above --max-grad-norm too at this rate
    assert [event.value for event in events.Scalars("train/grad_norm")] == pytest.approx(logged)

    height, width, _ = imread(out / "training_curves.png").shape
    assert (width, height) == (1100, 400)

    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    model = json.loads((out / "training_args.json").read_text())["model"]
    assert data["base_model"] == Path(model).name and str(tmp_path) not in card.content  # no machine path
    assert card.text.startswith(f"# {Path(model).name} fine-tuned for extractive question answering on")
    assert "12 steps (" in card.text and " epochs)" in card.text and "Calibrator: " in card.text
    assert (data["library_name"], data["pipeline_tag"]) == ("transformers", "question-answering")
    found = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert found == {"exact_match": round(metrics["exact_match"], 2), "f1": round(metrics["f1"], 2)}
    assert "training_curves.png" in card.text and "| 2 (selected) |" in card.text
    # The usage snippet answers a question, run as written from the directory above the model's.
    snippet = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "from qa import pipeline" in snippet
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", snippet], cwd=out.parent, capture_output=True, text=True, env=environment, timeout=300
    )
    assert done.returncode == 0, done.stderr
    answer = eval(done.stdout.strip())  # the printed dict
    assert set(answer) == {"score", "start", "end", "answer"} and answer["answer"]


@pytest.mark.slow
def test_v2_data_stores_the_best_evaluations_threshold(tmp_path):
    model = make_arranged_model_dir(tmp_path / "arranged")
    data = squad_lines(tmp_path / "v2.jsonl", "Denver Broncos", unanswerable=True, copies=7)  # 28 of each kind
    out = tmp_path / "out"
    argv = tiny_train_argv(model, out, tmp_path / "cache", "--train-file", str(data), "--validation-file", str(data))
    argv += ["--lr", "3e-2", "--batch-size", "4", "--max-steps", "6", "--eval-strategy", "steps", "--eval-steps", "2"]
    summary = train_cmd.main(argv)
    best = summary["metrics"]["best_model"]["step"]
    chosen = json.loads((out / f"checkpoint-{best}" / "metrics.json").read_text())
    stored = json.loads((out / "config.json").read_text())["qa_null_threshold"]
    assert stored == chosen["null_threshold"] == summary["metrics"]["null_threshold"] is not None
    assert json.loads((out / f"checkpoint-{best}" / "config.json").read_text())["qa_null_threshold"] == stored
    others = [path for path in out.glob("checkpoint-*") if path.name != f"checkpoint-{best}"]
    for path in others:  # every evaluation's checkpoint carries its own threshold
        own = json.loads((path / "metrics.json").read_text())["null_threshold"]
        assert json.loads((path / "config.json").read_text()).get("qa_null_threshold") == own


def test_flags_that_cannot_work_are_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import importlib.util

    def refused(*flags):
        with pytest.raises(SystemExit) as caught:
            train_cmd.main(["--output-dir", str(tmp_path / "out"), "--train-file", str(data), *flags])
        assert caught.value.code == 2 and not (tmp_path / "out").exists()
        return capsys.readouterr().err

    data = squad_lines(tmp_path / "d.jsonl", "2016")
    assert "needs --eval-steps N" in refused("--validation-file", str(data), "--eval-strategy", "steps")
    assert "needs validation data" in refused("--eval-strategy", "epoch")
    assert "--early-stopping-patience needs evaluations" in refused("--early-stopping-patience", "2")
    real_find_spec = importlib.util.find_spec
    missing = {"tensorboard", "mlflow"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name in missing else real_find_spec(name))
    assert "pip install tensorboard" in refused("--report-to", "tensorboard")
    assert "--report-to mlflow needs the mlflow package: pip install mlflow" in refused("--report-to", "mlflow")
    both = refused("--report-to", "all")
    assert "pip install tensorboard" in both and "pip install mlflow" in both


def test_without_matplotlib_the_run_says_so_once_and_still_writes_its_card(falling, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    out = tmp_path / "out"
    train_cmd.main(falling(out, "--max-steps", "2"))
    assert capsys.readouterr().err.count("matplotlib is not installed") == 1
    assert not (out / "training_curves.png").exists() and (out / "README.md").is_file()
    shutil.rmtree(out)


# ---------------------------------------------------------------- hardening: resume keeps the stop and the selection


@pytest.mark.slow
def test_resuming_an_early_stopped_run_trains_no_further(falling, tmp_path, capsys):
    out = tmp_path / "out"
    train_cmd.main(falling(out, "--early-stopping-patience", "2"))
    before = sorted(p.name for p in out.glob("checkpoint-*"))
    capsys.readouterr()
    summary = train_cmd.main(falling(out, "--early-stopping-patience", "2", "--resume"))
    err = capsys.readouterr().err
    assert summary["steps"] == 6 and [step for step, _ in evaluations(out)] == [2, 4, 6]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == before  # no checkpoint-8
    assert "the run stopped early at step 6; nothing is left to train" in err
    assert "trained 0 steps (6 in all)" in err
    assert same_weights(weights(out), weights(out / "checkpoint-2"))


@pytest.mark.slow
def test_killed_between_the_stop_and_the_final_model_a_resume_finishes_without_training_and_keeps_selection(
    falling, tmp_path, capsys
):
    out = tmp_path / "out"
    sigkill_after_checkpoint(6, falling(out, "--early-stopping-patience", "2"))  # the stopping evaluation
    # Settings that decide selection may not change on resume: each is refused, and nothing is trained.
    for changed in (
        ("--metric-for-best-model", "exact_match"),
        ("--early-stopping-patience", "3"),
        ("--early-stopping-threshold", "0.5"),
    ):
        extra = ("--early-stopping-patience", "2") if changed[0] != "--early-stopping-patience" else ()
        with pytest.raises(SystemExit) as exit_info:
            train_cmd.main(falling(out, *extra, *changed, "--resume"))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) <= 3 and f"{changed[0]} {changed[1]} (the run began with" in err[-1], err
    summary = train_cmd.main(falling(out, "--early-stopping-patience", "2", "--resume"))
    assert summary["steps"] == 6 and [step for step, _ in evaluations(out)] == [2, 4, 6]
    assert not (out / "checkpoint-8").exists()
    assert json.loads((out / "metrics.json").read_text())["best_model"]["step"] == 2


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A local MLflow tracking store for this test (no server, no network): its URI, set as
    MLFLOW_TRACKING_URI. MLflow is optional for users; requirements-dev.txt installs it, so CI runs these."""
    pytest.importorskip("mlflow")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    # MLflow keeps a new experiment's artifacts under ./mlruns of the working directory: the test's, not the
    # repository's
    monkeypatch.chdir(tmp_path)
    return store


@pytest.mark.slow
def test_report_to_all_sends_the_same_records_to_mlflow_and_tensorboard(
    falling, tmp_path, monkeypatch, mlflow_store, capsys
):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = mlflow_store
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "falling")
    out = tmp_path / "out"
    train_cmd.main(falling(out, "--report-to", "all"))
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert f"MLflow: run {run_id} in {store} (experiment falling)" in capsys.readouterr().err
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    artifacts = {item.path for item in client.list_artifacts(run_id)}
    assert {"README.md", "metrics.json", "report.json", "report.html"} <= artifacts, artifacts
    assert client.get_experiment(run.info.experiment_id).name == "falling"
    window = json.loads((out / "training_args.json").read_text())["window"]
    assert run.data.params["lr"] == "0.03" and run.data.params["window.max_length"] == str(window["max_length"])
    logged = {
        "eval/f1": evaluations(out),
        "train/loss": [(row["step"], row["loss"]) for row in train_log(out) if "loss" in row],
    }
    events = EventAccumulator(str(out / "runs"))
    events.Reload()
    for name, expected in logged.items():
        in_mlflow = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
        in_tensorboard = [(event.step, event.value) for event in events.Scalars(name)]
        for found in (in_mlflow, in_tensorboard):
            assert [step for step, _ in found] == [step for step, _ in expected], name
            assert [value for _, value in found] == pytest.approx([value for _, value in expected]), name


@pytest.mark.slow
def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch, capsys, mlflow_store):
    from mlflow.tracking import MlflowClient

    from qa.train.metric_logging import MLflowLogger

    store = mlflow_store
    out = tmp_path / "out"
    out.mkdir()
    record = {"step": 2, "epoch": 0.5, "loss": 1.5, "grad_norm": None, "lr": 1e-4, "windows_per_s": 3.0}
    first = MLflowLogger(out, {"lr": 1e-4, "window": {"max_length": 64}, "train_file": ["a.json", "b.json"]})
    first.start(resumed_at=None)
    first.log(record)
    first.close()
    again = MLflowLogger(out, {"lr": 1e-4, "window": {"max_length": 64}})
    again.start(resumed_at=2)
    again.log({**record, "step": 4, "loss": 1.0})
    again.close()
    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("squad-qa").experiment_id])
    assert len(runs) == 1  # continued, not a second run
    history = sorted((m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "train/loss"))
    assert history == [(2, 1.5), (4, 1.0)]
    assert "train/grad_norm" not in runs[0].data.metrics  # an absent value is left out, not logged as 0
    params = runs[0].data.params
    assert (params["window.max_length"], params["train_file"]) == ("64", '["a.json", "b.json"]')

    elsewhere = f"sqlite:///{tmp_path / 'other.db'}"  # resumed against another store: a new run there, said
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    moved = MLflowLogger(out, {"lr": 1e-4})
    moved.start(resumed_at=4)
    moved.log({**record, "step": 6, "loss": 0.5})
    moved.close()
    assert f"MLflow run {runs[0].info.run_id} is not in {elsewhere}" in capsys.readouterr().err
    there = MlflowClient(tracking_uri=elsewhere)
    (new_run,) = there.search_runs([there.get_experiment_by_name("squad-qa").experiment_id])
    assert [(m.step, m.value) for m in there.get_metric_history(new_run.info.run_id, "train/loss")] == [(6, 0.5)]


@pytest.mark.slow
def test_a_failed_run_ends_its_mlflow_run_as_failed(falling, tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    store = mlflow_store
    out = tmp_path / "out"
    with pytest.raises(SystemExit):  # a loss that overflows stops the run (one line, exit status 2)
        train_cmd.main(falling(out, "--report-to", "mlflow", "--lr", "1e30", "--max-grad-norm", "0"))
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert MlflowClient(tracking_uri=store).get_run(run_id).info.status == "FAILED"


@pytest.mark.slow
def test_markup_and_quotes_in_file_names_are_shown_not_run_in_the_model_card(tmp_path):
    import ast

    from huggingface_hub import ModelCard

    model = make_arranged_model_dir(tmp_path / "arranged")
    data = squad_lines(tmp_path / "<img src=x onerror=alert(1)> {{ data }}.jsonl", "Denver Broncos")
    out = tmp_path / 'out "<b>{% x %}'
    argv = tiny_train_argv(model, out, tmp_path / "cache", "--train-file", str(data), "--validation-file", str(data))
    train_cmd.main([*argv, "--max-steps", "1", "--batch-size", "4"])
    card = ModelCard.load(out / "README.md")
    assert "<img" not in card.text and "&lt;img src=x onerror=alert(1)&gt; {{ data }}.jsonl" in card.text
    snippet = card.text.split("```python\n", 1)[1].split("```", 1)[0]
    call = ast.parse(snippet).body[1].value  # qa = pipeline("question-answering", model=...)
    assert call.keywords[0].value.value == out.name  # the directory's own name, as a Python string


@pytest.mark.slow
def test_mlflow_stores_that_cannot_be_written_stop_in_one_line_and_one_failing_later_costs_nothing(
    falling, tmp_path, monkeypatch, mlflow_store, capsys
):
    import mlflow
    from mlflow.tracking import MlflowClient

    def refused(out):
        with pytest.raises(SystemExit) as caught:
            train_cmd.main(falling(out, "--report-to", "mlflow", "--max-steps", "2"))
        err = capsys.readouterr().err
        assert caught.value.code == 2 and "Traceback" not in err
        return err.strip().splitlines()[-1]

    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}")  # cannot be made
    assert refused(tmp_path / "unwritable").startswith("error: --report-to mlflow: cannot log to sqlite:///")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://somewhere")
    assert refused(tmp_path / "bad").startswith("error: --report-to mlflow: cannot log to nosuchscheme://somewhere")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    client = MlflowClient(tracking_uri=mlflow_store)
    client.delete_experiment(client.create_experiment("gone"))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "gone")
    line = refused(tmp_path / "deleted")
    assert "(experiment gone)" in line and "deleted" in line.lower(), line
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "fine")

    def store_gone(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("the tracking store went away")

    monkeypatch.setattr(mlflow, "log_metrics", store_gone)
    out = tmp_path / "goes-on"
    summary = train_cmd.main(falling(out, "--report-to", "mlflow"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "MLflow stopped logging" in line]
    assert len(warnings) == 1 and summary["steps"] == 12 and (out / "model.safetensors").is_file()


def test_tensorboard_after_a_resume_shows_each_step_once_with_the_resumed_run_s_values(tmp_path):
    """A run killed after logging steps 2-6 but checkpointed at 4, then resumed at 4: TensorBoard shows
    steps 2, 4 from the first part and 6, 8 from the resumed one (what the killed run logged at 6 is hidden)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from qa.train.metric_logging import TensorBoardLogger

    def record(step, loss):
        return {"step": step, "epoch": step / 8, "loss": loss, "grad_norm": 1.0, "lr": 1e-4, "windows_per_s": 3.0}

    first = TensorBoardLogger(tmp_path)
    first.start(resumed_at=None)
    for step, loss in ((2, 4.0), (4, 3.0), (6, 2.5)):
        first.log(record(step, loss))
    first.close()
    resumed = TensorBoardLogger(tmp_path)
    resumed.start(resumed_at=4)
    for step, loss in ((6, 2.0), (8, 1.0)):
        resumed.log(record(step, loss))
    resumed.close()
    events = EventAccumulator(str(tmp_path / "runs"))
    events.Reload()
    assert [(event.step, event.value) for event in events.Scalars("train/loss")] == [
        (2, 4.0),
        (4, 3.0),
        (6, 2.0),
        (8, 1.0),
    ]


def test_an_over_long_setting_is_logged_to_mlflow_cut_short_and_the_run_goes_on(tmp_path, mlflow_store):
    from mlflow.tracking import MlflowClient

    from qa.train.metric_logging import MLflowLogger

    out = tmp_path / "out"
    out.mkdir()
    files = [f"/data/{'x' * 200}-{n}.json" for n in range(60)]  # 12,000 characters of --train-file
    logger = MLflowLogger(out, {"lr": 1e-4, "train_file": files})
    logger.start(resumed_at=None)
    logger.log({"step": 2, "epoch": 0.5, "loss": 1.5, "grad_norm": 1.0, "lr": 1e-4, "windows_per_s": 3.0})
    logger.close()
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    run = MlflowClient(tracking_uri=mlflow_store).get_run(run_id)
    assert 0 < len(run.data.params["train_file"]) <= 6000 and run.data.metrics["train/loss"] == 1.5
