"""Distillation: a teacher's soft targets in the same loop, and students with fewer layers."""

import json

import pytest
import torch
from helpers import losses_of, make_tiny_model_dir, sigkill_after_checkpoint, tiny_train_argv, write_squad_json
from safetensors.torch import load_file
from transformers import (
    AlbertConfig,
    AlbertForQuestionAnswering,
    AutoModelForQuestionAnswering,
    BertConfig,
    BertForQuestionAnswering,
    DistilBertConfig,
    DistilBertForQuestionAnswering,
    RobertaConfig,
    RobertaForQuestionAnswering,
)

from qa.commands import train as train_cmd
from qa.errors import QAError
from qa.model.student import evenly_spaced_layers, shrink_to_layers


def run(student, out, data, tmp_path, *extra):
    argv = tiny_train_argv(student, out, tmp_path / "cache", "--train-file", str(data), "--batch-size", "2")
    return train_cmd.main([*argv, "--log-steps", "1", "--lr", "3e-3", "--seed", "3", *extra])


@pytest.fixture
def data(tmp_path):
    return write_squad_json(tmp_path / "train.json")


@pytest.mark.slow
def test_a_student_on_soft_targets_alone_moves_toward_its_teacher(tiny_model_dir, arranged_model_dir, data, tmp_path):
    out = tmp_path / "student"
    # One batch of all 4 windows per step, so that every step's loss is measured on the same windows.
    run(
        tiny_model_dir,
        out,
        data,
        tmp_path,
        "--teacher",
        str(arranged_model_dir),
        "--max-steps",
        "20",
        "--distill-alpha",
        "1",
        "--distill-temperature",
        "1",
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
        "--no-epoch-checkpoints",
    )
    kl = losses_of(out)  # alpha 1, T 1: the loss is KL(teacher || student) itself
    assert len(kl) == 20 and kl[-1] < 0.5 * kl[0], kl
    args = json.loads((out / "training_args.json").read_text())
    assert (args["teacher"], args["distill_alpha"], args["distill_temperature"]) == (str(arranged_model_dir), 1.0, 1.0)
    assert "teacher" in (out / "README.md").read_text()


@pytest.mark.slow
def test_alpha_zero_reproduces_the_plain_losses_exactly(tiny_model_dir, arranged_model_dir, data, tmp_path):
    run(tiny_model_dir, tmp_path / "plain", data, tmp_path, "--max-steps", "6")
    run(
        tiny_model_dir,
        tmp_path / "alpha0",
        data,
        tmp_path,
        "--max-steps",
        "6",
        "--teacher",
        str(arranged_model_dir),
        "--distill-alpha",
        "0",
    )
    assert losses_of(tmp_path / "alpha0") == losses_of(tmp_path / "plain")
    a, b = (
        load_file(str(tmp_path / "plain" / "model.safetensors")),
        load_file(str(tmp_path / "alpha0" / "model.safetensors")),
    )
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.slow
def test_distillation_works_on_v2_data(tiny_model_dir, arranged_model_dir, tmp_path):
    from test_squad_v2 import v2_articles

    data = write_squad_json(tmp_path / "v2.json", v2_articles())
    summary = run(
        tiny_model_dir,
        tmp_path / "out",
        data,
        tmp_path,
        "--teacher",
        str(arranged_model_dir),
        "--max-steps",
        "3",
        "--validation-file",
        str(data),
    )
    assert summary["steps"] == 3 and "NoAns_total" in summary["metrics"]


def test_a_teacher_with_another_vocabulary_is_refused_before_any_work(tiny_model_dir, data, tmp_path, capsys):
    from helpers import make_bert_tokenizer

    other = make_tiny_model_dir(tmp_path / "cased")
    make_bert_tokenizer(other, distilbert=True, lowercase=False).save_pretrained(other)  # another vocabulary
    with pytest.raises(SystemExit) as caught:
        run(tiny_model_dir, tmp_path / "out", data, tmp_path, "--teacher", str(other), "--max-steps", "1")
    err = capsys.readouterr().err
    assert caught.value.code == 2 and "its tokenizer is not the student's" in err and "vocabulary entries differ" in err
    assert not (tmp_path / "out" / "train_log.jsonl").exists()


def test_distillation_flags_without_a_teacher_are_refused(capsys, tmp_path):
    with pytest.raises(SystemExit):
        train_cmd.main(["--output-dir", str(tmp_path / "o"), "--distill-alpha", "0.7"])
    assert "--distill-alpha only apply with --teacher" in capsys.readouterr().err


@pytest.mark.slow
def test_a_killed_distillation_resumes_bit_exactly(tiny_model_dir, arranged_model_dir, data, tmp_path):
    common = ["--teacher", str(arranged_model_dir), "--max-steps", "8", "--save-steps", "2", "--student-layers", "1"]
    run(tiny_model_dir, tmp_path / "whole", data, tmp_path, *common)
    killed = tmp_path / "killed"
    argv = tiny_train_argv(tiny_model_dir, killed, tmp_path / "cache", "--train-file", str(data), "--batch-size", "2")
    argv += ["--log-steps", "1", "--lr", "3e-3", "--seed", "3", *common]
    sigkill_after_checkpoint(4, argv)
    train_cmd.main([*argv, "--resume"])
    assert losses_of(killed) == losses_of(tmp_path / "whole")
    a = load_file(str(tmp_path / "whole" / "model.safetensors"))
    b = load_file(str(killed / "model.safetensors"))
    assert all(torch.equal(a[name], b[name]) for name in a)


# ---------------------------------------------------------------- students with fewer layers


def test_evenly_spaced_layers_are_distilberts():
    assert evenly_spaced_layers(12, 6) == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice from BERT-base
    assert evenly_spaced_layers(6, 3) == [0, 2, 5]
    assert evenly_spaced_layers(4, 4) == [0, 1, 2, 3] and evenly_spaced_layers(5, 1) == [0]


def tiny(kind):
    common = {
        "vocab_size": 99,
        "hidden_size": 16,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "num_hidden_layers": 4,
    }
    if kind == "bert":
        return BertForQuestionAnswering(BertConfig(**common))
    if kind == "roberta":
        return RobertaForQuestionAnswering(RobertaConfig(**common, pad_token_id=1))
    if kind == "distilbert":
        return DistilBertForQuestionAnswering(
            DistilBertConfig(vocab_size=99, dim=16, hidden_dim=32, n_heads=2, n_layers=4)
        )
    return AlbertForQuestionAnswering(AlbertConfig(**common, embedding_size=8))


@pytest.mark.parametrize(
    ("kind", "layers"), [("bert", "encoder.layer"), ("roberta", "encoder.layer"), ("distilbert", "transformer.layer")]
)
def test_a_student_keeps_the_chosen_layers_weight_for_weight_and_loads_as_usual(kind, layers, tmp_path):
    torch.manual_seed(0)
    source = tiny(kind)
    before = {name: tensor.clone() for name, tensor in source.state_dict().items()}
    assert shrink_to_layers(source, 2, kind) == [0, 3]
    source.save_pretrained(tmp_path)
    student = AutoModelForQuestionAnswering.from_pretrained(tmp_path)
    assert len(student.base_model.get_submodule(layers)) == 2
    prefix = f"{student.base_model_prefix}.{layers}"
    for name, tensor in student.state_dict().items():
        if name.startswith(prefix + ".1."):
            assert torch.equal(tensor, before[name.replace(prefix + ".1.", prefix + ".3.")]), name
        elif name.startswith(prefix + ".0.") or name in before:
            assert torch.equal(tensor, before[name]), name
    ids = torch.tensor([[5, 6, 7, 8]])
    assert student(input_ids=ids).start_logits.shape == (1, 4)


def test_layer_counts_out_of_range_and_unknown_layouts_are_one_line():
    with pytest.raises(QAError, match="has 4 layers; choose from 1 to 4"):
        shrink_to_layers(tiny("bert"), 5, "tiny-bert")
    with pytest.raises(QAError, match="no list of transformer layers found in tiny-albert"):
        shrink_to_layers(tiny("albert"), 2, "tiny-albert")


def test_train_py_makes_a_student_that_evaluate_and_auto_classes_load(tiny_model_dir, data, tmp_path, capsys):
    out = tmp_path / "student"
    run(
        tiny_model_dir, out, data, tmp_path, "--student-layers", "1", "--max-steps", "2", "--validation-file", str(data)
    )
    assert "student: layers [0] of" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["n_layers"] == 1
    assert len(AutoModelForQuestionAnswering.from_pretrained(out).distilbert.transformer.layer) == 1
    with pytest.raises(SystemExit) as caught:
        run(tiny_model_dir, tmp_path / "o", data, tmp_path, "--student-layers", "3", "--max-steps", "1")
    assert caught.value.code == 2 and "has 2 layers; choose from 1 to 2" in capsys.readouterr().err
