"""The mixed-precision paths run on CPU too, so they cannot rot unnoticed without a GPU."""

import shutil

import pytest
import torch
from helpers import losses_of, tiny_train_argv, write_squad_json
from safetensors.torch import load_file

from qa.commands import predict as predict_cmd
from qa.commands import train as train_cmd
from qa.model.runtime import resolve_precision


def train(model, data, out, tmp_path, *extra):
    argv = tiny_train_argv(
        model, out, tmp_path / "cache", "--batch-size", "2", "--lr", "1e-3", "--log-steps", "1", *extra
    )
    return train_cmd.main([*argv, "--train-file", str(data)])


def losses(out):
    return losses_of(out)


def test_auto_is_exact_fp32_on_cpu_and_named_precisions_are_kept():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert [resolve_precision(name, cpu) for name in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]


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
    from qa.model.runtime import Runtime, inference_batch_size

    cpu, cuda = Runtime(torch.device("cpu"), "fp32"), Runtime(torch.device("cuda", 0), "bf16")
    assert (inference_batch_size(None, cpu), inference_batch_size(None, cuda), inference_batch_size(5, cpu)) == (
        8,
        64,
        5,
    )
