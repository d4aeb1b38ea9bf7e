"""The three command lines: flags made from the config dataclasses, one validation rule for all."""

import contextlib
import dataclasses
import io
import json
import subprocess
import sys
import typing

import pytest
from helpers import REPO_ROOT

from qa.commands import evaluate as evaluate_cmd
from qa.commands import predict as predict_cmd
from qa.commands import train as train_cmd
from qa.config.cli import run_qa_aliases
from qa.config.evaluate import EvaluateConfig
from qa.config.predict import PredictConfig
from qa.config.train import TrainConfig
from qa.errors import QAError


def _flat_fields(config_class):
    hints = typing.get_type_hints(config_class)
    for item in dataclasses.fields(config_class):
        if dataclasses.is_dataclass(hints[item.name]):
            yield from _flat_fields(hints[item.name])
        else:
            yield item, hints[item.name]


def _other_value(item, annotation):
    default = item.default if item.default is not dataclasses.MISSING else None
    text = str(annotation)
    if "list[str]" in text:
        return ["a.json", "b.json"], ["a.json", "b.json"]
    if "bool" in text:
        return None, not default
    if "choices" in item.metadata:
        choice = next(choice for choice in item.metadata["choices"] if choice != default)
        return [choice], choice
    if "int" in text:
        return ["7"], 7
    if "float" in text:
        return ["0.25"], 0.25
    return ["some/value"], "some/value"


def test_every_training_field_has_a_flag_that_reaches_it():
    for item, annotation in _flat_fields(TrainConfig):
        text_values, expected = _other_value(item, annotation)
        name = item.name.replace("_", "-")
        if text_values is None:  # a switch
            argv = [f"--no-{name}" if item.default else f"--{name}"]
        else:
            argv = [f"--{name}", *text_values]
        parser = train_cmd.command_parser("train.py", "", TrainConfig)
        values = vars(parser.parse_args(argv))
        assert values[item.name] == expected, item.name


@pytest.mark.parametrize(
    ("max_length", "stride", "accepted"),
    [(32, 26, True), (32, 27, False), (384, 128, True), (64, 64, False), (5, 0, False), (64, 0, True)],
)
def test_window_settings_are_accepted_or_refused_alike_by_every_command(max_length, stride, accepted, capsys):
    window = ["--max-length", str(max_length), "--stride", str(stride)]
    commands = [
        (train_cmd.config_from_args, ["--train-file", __file__]),
        (evaluate_cmd.config_from_args, ["--ckpt", "no-such-model"]),
        (predict_cmd.config_from_args, ["--ckpt", "no-such-model"]),
    ]
    for parse, extra in commands:
        if accepted:
            config = parse([*extra, *window])
            assert (config.window.max_length, config.window.stride) == (max_length, stride)
        else:
            with pytest.raises(QAError) as caught:
                parse([*extra, *window])
            assert "--max-length" in str(caught.value) or "--stride" in str(caught.value)


def test_bad_values_are_all_reported_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        train_cmd.main(["--output-dir", str(tmp_path / "o"), "--lr", "-1", "--epochs", "inf", "--seed", "-1"])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1
    assert "--lr must be > 0" in err and "--epochs must be a finite number" in err and "--seed must be in" in err


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "predict.py"])
def test_help_imports_no_torch(script):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['{script}', '--help']\n"
        "try:\n"
        f"    runpy.run_path('{script}', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--max-length" in result.stdout and result.stdout.strip().endswith("False")


def test_top_k_is_limited_by_the_search_width():
    with pytest.raises(QAError, match="--top-k"):
        predict_cmd.config_from_args(["--top-k", "5", "--n-best", "3"])


# ---------------------------------------------------------------- run_qa.py's flag names and --config

RUN_QA_COMMAND = [
    # The README example of transformers' examples/pytorch/question-answering/run_qa.py, plus more of its flags
    *("--model_name_or_path", "some/model", "--dataset_name", "squad_v2", "--do_train", "--do_eval"),
    *("--per_device_train_batch_size", "12", "--learning_rate", "3e-5", "--num_train_epochs", "2"),
    *("--max_seq_length", "256", "--doc_stride", "64", "--output_dir", "OUT", "--version_2_with_negative"),
    *("--gradient_accumulation_steps", "2", "--warmup_ratio", "0.1", "--weight_decay", "0.0", "--seed", "7"),
    *("--save_steps", "100", "--save_total_limit", "2", "--max_train_steps", "50", "--max_grad_norm", "0.5"),
    *("--per_device_eval_batch_size", "32", "--max_train_samples", "100", "--max_eval_samples", "50"),
    *("--logging_steps", "5", "--fp16", "--overwrite_output_dir", "--dataloader_num_workers", "1"),
]
OUR_COMMAND = [
    *("--model", "some/model", "--dataset", "squad_v2"),
    *("--batch-size", "12", "--lr", "3e-5", "--epochs", "2"),
    *("--max-length", "256", "--stride", "64", "--output-dir", "OUT", "--version-2-with-negative"),
    *("--grad-accum", "2", "--warmup-ratio", "0.1", "--weight-decay", "0.0", "--seed", "7"),
    *("--save-steps", "100", "--save-total-limit", "2", "--max-steps", "50", "--max-grad-norm", "0.5"),
    *("--eval-batch-size", "32", "--max-train-samples", "100", "--max-eval-samples", "50"),
    *("--log-steps", "5", "--precision", "fp16", "--overwrite-output-dir", "--num-workers", "1"),
]


def test_a_run_qa_command_line_parses_to_the_same_config_as_ours(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    theirs = train_cmd.config_from_args(RUN_QA_COMMAND)
    assert theirs == train_cmd.config_from_args(OUR_COMMAND)
    assert theirs != train_cmd.config_from_args([])  # every flag above changed something
    evaluate = ["--model_name_or_path", "m", "--n_best_size", "5", "--null_score_diff_threshold", "-1.5"]
    ours = ["--ckpt", "m", "--n-best", "5", "--null-threshold=-1.5"]
    assert evaluate_cmd.config_from_args(evaluate) == evaluate_cmd.config_from_args(ours)
    predict = ["--max_answer_length", "12", "--question", "q", "--context", "c"]
    assert predict_cmd.config_from_args(predict).decode.max_answer_length == 12


def test_every_alias_in_the_table_is_a_flag_of_its_command_and_shown_in_help():
    for module, config_class in (
        (train_cmd, TrainConfig),
        (evaluate_cmd, EvaluateConfig),
        (predict_cmd, PredictConfig),
    ):
        table = run_qa_aliases(config_class)
        assert len(table) >= 9
        help_text = " ".join(_help(module).split())
        for theirs, ours in table:
            assert theirs in help_text, theirs
            assert ours.split()[0] in help_text or ours.startswith("("), ours
    table_doc = (REPO_ROOT / "docs" / "run_qa.md").read_text()  # the README links it
    assert "docs/run_qa.md" in (REPO_ROOT / "README.md").read_text()
    for theirs, ours in run_qa_aliases(TrainConfig):
        row = f"| `{theirs}` | " + (f"`{ours}`" if ours.startswith("--") else ours) + " |"
        assert row in table_doc, f"docs/run_qa.md's table lacks the row {row}"


def _help(module):
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        module.config_from_args(["--help"])
    return out.getvalue()


@pytest.mark.slow
def test_config_file_replays_a_run_and_flags_override_it(tiny_model_dir, tmp_path):
    from helpers import losses_of, tiny_train_argv, write_squad_json

    data = write_squad_json(tmp_path / "train.json")
    first = tmp_path / "first"
    argv = tiny_train_argv(tiny_model_dir, first, tmp_path / "cache", "--max-steps", "3", "--batch-size", "2")
    train_cmd.main([*argv, "--train-file", str(data), "--lr", "1e-3", "--log-steps", "1", "--seed", "5"])
    replay = tmp_path / "replay"
    train_cmd.main(["--config", str(first / "training_args.json"), "--output-dir", str(replay)])
    assert losses_of(replay) == losses_of(first)
    replayed = json.loads((replay / "training_args.json").read_text())
    assert {**replayed, "output_dir": None} == {
        **json.loads((first / "training_args.json").read_text()),
        "output_dir": None,
    }
    config = train_cmd.config_from_args(
        ["--config", str(first / "training_args.json"), "--lr", "2e-3", "--stride", "8"]
    )
    assert (config.lr, config.window.stride, config.window.max_length, config.seed) == (2e-3, 8, 48, 5)


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"lr": 1e-3, "learning_rte": 1, "windw": {}}, "unknown keys 'learning_rte', 'windw'"),
        ({"window": {"max_len": 8}}, "unknown key 'window.max_len'"),
        ({"epochs": "three"}, "'epochs' must be a number, got 'three'"),
        ({"train_file": "a.json"}, "'train_file' must be a list of str"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, capsys, settings, fragment):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(SystemExit) as caught:
        train_cmd.main(["--config", str(path)])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and fragment in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- hardening: --config meets the rules of the flags


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"metric_for_best_model": "loss"}, "'metric_for_best_model' must be one of f1, exact_match, got 'loss'"),
        ({"eval_strategy": "sometimes"}, "'eval_strategy' must be one of no, steps, epoch, got 'sometimes'"),
        ({"report_to": "wandb"}, "'report_to' must be one of none, tensorboard, mlflow, all, got 'wandb'"),
        ({"precision": "int8"}, "'precision' must be one of auto, fp32, bf16, fp16, got 'int8'"),
        ({"max_steps": 6.0}, "'max_steps' must be an integer, got 6.0"),
    ],
)
def test_config_values_meet_the_rule_of_their_flag_and_name_the_key_and_file(tmp_path, capsys, settings, fragment):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as caught:
        train_cmd.main(["--config", str(path), "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert caught.value.code == 2 and err.count("\n") == 1, err
    assert f"--config {path}: {fragment}" in err
    assert not out.exists()  # refused before any work: no train_log.jsonl, no lock


def test_config_given_a_directory_says_so(tmp_path):
    with pytest.raises(QAError, match=f"--config {tmp_path}: is a directory"):
        train_cmd.config_from_args(["--config", str(tmp_path)])


def test_flags_given_win_over_the_settings_of_the_file_that_they_imply(tmp_path):
    path = tmp_path / "training_args.json"
    path.write_text(json.dumps({"max_steps": 6, "eval_strategy": "steps", "eval_steps": 2, "validation_file": None}))
    by_epochs = train_cmd.config_from_args(["--config", str(path), "--epochs", "2"])
    assert (by_epochs.max_steps, by_epochs.epochs) == (None, 2.0)
    by_epoch_evaluations = train_cmd.config_from_args(["--config", str(path), "--eval-strategy", "epoch"])
    assert (by_epoch_evaluations.eval_strategy, by_epoch_evaluations.eval_steps) == ("epoch", None)
    kept = train_cmd.config_from_args(["--config", str(path), "--eval-strategy", "steps"])
    assert (kept.eval_strategy, kept.eval_steps, kept.max_steps) == ("steps", 2, 6)
    unevaluated = train_cmd.config_from_args(["--config", str(path), "--no-eval"])
    assert unevaluated.evaluation_schedule == "no" and unevaluated.eval_steps is None


def test_eval_steps_alone_means_steps_and_without_validation_data_is_refused(tmp_path):
    data = tmp_path / "train.json"
    data.write_text("{}")
    config = train_cmd.config_from_args(
        ["--train-file", str(data), "--validation-file", str(data), "--eval-steps", "3"]
    )
    assert (config.evaluation_schedule, config.eval_steps) == ("steps", 3)
    hub_default = train_cmd.config_from_args(["--eval-steps", "3"])  # the hub dataset's validation split
    assert hub_default.evaluation_schedule == "steps"
    for argv, reason in (
        (["--train-file", str(data), "--eval-steps", "3"], "no validation data"),
        (["--eval-steps", "3", "--no-eval"], "--no-eval"),
    ):
        with pytest.raises(QAError, match=f"--eval-steps needs validation data to evaluate on: {reason}"):
            train_cmd.config_from_args(argv)
