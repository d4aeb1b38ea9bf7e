"""The three command lines: flags made from the config dataclasses, one validation rule for all."""

import dataclasses
import subprocess
import sys
import typing

import pytest
from helpers import REPO_ROOT

from qa import evaluate_cmd, predict_cmd, train_cmd
from qa.config import TrainConfig
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
