"""The mixed-precision paths run on CPU too, so they cannot rot unnoticed without a GPU."""

import contextlib
import shutil

import pytest
import torch
from helpers import losses_of, tiny_train_argv, write_squad_json
from safetensors.torch import load_file

from qa.commands import predict as predict_cmd
from qa.commands import train as train_cmd
from qa.runtime.device import Runtime, precision_note, resolve_precision, setup_runtime


def train(model, data, out, tmp_path, *extra):
    argv = tiny_train_argv(
        model, out, tmp_path / "cache", "--batch-size", "2", "--lr", "1e-3", "--log-steps", "1", *extra
    )
    return train_cmd.main([*argv, "--train-file", str(data)])


def losses(out):
    return losses_of(out)


def test_auto_trains_in_exact_fp32_on_cpu_and_named_precisions_are_kept():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert [resolve_precision(name, cpu) for name in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "inference"), [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]
)
def test_auto_inference_is_bf16_exactly_where_the_cpu_has_native_bf16(monkeypatch, avx512_bf16, amx, inference):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, for_inference=True) == inference
    assert resolve_precision("auto", cpu) == "fp32"  # training keeps fp32 on every CPU
    assert resolve_precision("fp32", cpu, for_inference=True) == "fp32"  # asked for: exact
    runtime = setup_runtime("auto", device="cpu", for_inference=True)
    assert runtime.bf16_weights == (inference == "bf16")
    if runtime.bf16_weights:  # bf16 weights run under bf16 autocast too (fp32 tensors a family makes itself)
        assert runtime.autocast().fast_dtype == torch.bfloat16
    else:
        assert isinstance(runtime.autocast(), contextlib.nullcontext)
    assert ("bf16 weights" in precision_note(runtime, "auto")) == (inference == "bf16")


@pytest.mark.parametrize(("supported", "chosen"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(monkeypatch, supported, chosen):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: supported)
    assert resolve_precision("auto", torch.device("cuda", 0)) == chosen
    assert resolve_precision("auto", torch.device("cuda", 0), for_inference=True) == chosen
    runtime = Runtime(torch.device("cuda", 0), chosen)
    assert runtime.autocast().fast_dtype == (torch.bfloat16 if supported else torch.float16)


def test_adamw_runs_its_fused_kernel_and_fp16_alone_gets_a_grad_scaler(tiny_model_dir):
    from transformers import AutoModelForQuestionAnswering

    from qa.config.train import TrainConfig
    from qa.train.optimization import setup_optimization

    model = AutoModelForQuestionAnswering.from_pretrained(tiny_model_dir)
    windows = type("Windows", (), {"__len__": lambda self: 32, "groups": None})()
    for precision, scaled in (("fp32", False), ("fp16", True)):
        optimization = setup_optimization(
            TrainConfig(max_steps=2), Runtime(torch.device("cpu"), precision), model, windows
        )
        assert optimization.optimizer.defaults["fused"] is True
        assert optimization.scaler.is_enabled() == scaled


def test_bf16_weights_give_the_spans_of_fp32_where_no_scores_are_near_ties(arranged_model_dir, monkeypatch, capsys):
    from qa.config.settings import DecodeSettings, WindowSettings
    from qa.data.questions import Question
    from qa.eval.answering import load_reader

    monkeypatch.setattr("qa.runtime.device.native_cpu_bf16", lambda: True)
    window = WindowSettings(max_length=64, stride=16)
    bf16 = load_reader(str(arranged_model_dir), window, DecodeSettings(), None, "auto")
    fp32 = load_reader(str(arranged_model_dir), window, DecodeSettings(), None, "fp32")
    assert (
        next(bf16.model.parameters()).dtype == torch.bfloat16 and next(fp32.model.parameters()).dtype == torch.float32
    )
    err = capsys.readouterr().err
    assert "precision: bf16 weights" in err and "precision: fp32 on cpu (--precision fp32)" in err
    contexts = [
        "In 2016 the Denver Broncos won the super bowl.",
        "The Denver Broncos played in 2016 at home, " * 6 + "and then the season ended.",
    ]
    questions = [Question("Who won?", context, None, 3) for context in contexts]
    spans = [[(a["start"], a["end"]) for a in answers] for answers in bf16.answer(questions)]
    assert spans == [[(a["start"], a["end"]) for a in answers] for answers in fp32.answer(questions)]


@pytest.mark.slow
def test_bf16_autocast_trains_and_answers_on_cpu(tiny_model_dir, arranged_model_dir, tmp_path, capsys):
    data = write_squad_json(tmp_path / "train.json")
    train(tiny_model_dir, data, tmp_path / "fp32", tmp_path, "--max-steps", "3")
    train(tiny_model_dir, data, tmp_path / "bf16", tmp_path, "--max-steps", "3", "--precision", "bf16")
    assert "cpu bf16" in capsys.readouterr().err
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.05)  # autocast really ran, and stays close
    context = "In 2016 the Denver Broncos won the super bowl."
    argv = ["--ckpt", str(arranged_model_dir), "--question", "Who won?", "--context", context, "--json"]
    assert predict_cmd.main([*argv, "--precision", "bf16"])[0][0]["answer"] == "Denver Broncos"


@pytest.mark.slow
def test_fp16_with_grad_scaler_resumes_exactly(tiny_model_dir, tmp_path):
    data = write_squad_json(tmp_path / "train.json")
    whole = tmp_path / "whole"
    train(tiny_model_dir, data, whole, tmp_path, "--max-steps", "6", "--save-steps", "3", "--precision", "fp16")
    state = torch.load(whole / "checkpoint-3" / "training_state.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0  # the scaler was enabled and its state saved
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(whole / "checkpoint-3", resumed / "checkpoint-3")
    train(
        tiny_model_dir,
        data,
        resumed,
        tmp_path,
        "--max-steps",
        "6",
        "--save-steps",
        "3",
        "--precision",
        "fp16",
        "--resume",
    )
    assert losses(resumed) == losses(whole)[3:]
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_inference_batch_defaults_to_8_windows_on_cpu_unless_given():
    from qa.runtime.device import Runtime, inference_batch_size

    cpu, cuda = Runtime(torch.device("cpu"), "fp32"), Runtime(torch.device("cuda", 0), "bf16")
    assert (inference_batch_size(None, cpu), inference_batch_size(None, cuda), inference_batch_size(5, cpu)) == (
        8,
        64,
        5,
    )


@pytest.mark.slow
def test_training_evaluates_under_the_precision_evaluate_py_uses_by_default(tmp_path, monkeypatch, capsys):
    """On a CPU with native bf16 (forced here, so every CPU runs it), training's evaluations use bf16 weights,
    as evaluate.py does by default: the run's last evaluation and a default evaluate.py on the same data give
    the same predictions, no-answer probabilities, threshold and EM/F1, and both name the precision."""
    import json

    from helpers import make_arranged_model_dir
    from test_best_model import squad_lines

    from qa.commands import evaluate as evaluate_cmd

    monkeypatch.setattr("qa.runtime.device.native_cpu_bf16", lambda: True)
    model = make_arranged_model_dir(tmp_path / "arranged")
    data = squad_lines(tmp_path / "v2.jsonl", "Denver Broncos", unanswerable=True, copies=7)
    out = tmp_path / "out"
    argv = tiny_train_argv(model, out, tmp_path / "cache", "--train-file", str(data), "--validation-file", str(data))
    summary = train_cmd.main([*argv, "--lr", "1e-2", "--batch-size", "4", "--max-steps", "2", "--eval-steps", "2"])
    assert "evaluations in bf16 weights, as evaluate.py and predict.py run here by default" in capsys.readouterr().err
    trained = summary["metrics"]
    assert trained["precision"] == "bf16" and trained["null_threshold"] is not None
    evaluated = evaluate_cmd.main(
        ["--ckpt", str(out), "--validation-file", str(data), "--output-dir", str(tmp_path / "e")]
    )
    assert "precision: bf16 weights" in capsys.readouterr().err
    keys = ["exact", "f1", "HasAns_f1", "NoAns_f1", "null_threshold", "precision"]
    assert {key: evaluated[key] for key in keys} == {key: trained[key] for key in keys}
    for name in ("predictions.json", "na_prob.json"):
        assert json.loads((tmp_path / "e" / name).read_text()) == json.loads((out / name).read_text()), name
