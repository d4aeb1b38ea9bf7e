"""train.py --distractors: every question trained with other paragraphs of its article under one softmax
shared by all its windows (Clark and Gardner, 2018)."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import write_squad_json
from test_training import CONTEXTS, QUESTIONS_AND_ANSWERS, base_args, log_of

from qa.commands import evaluate as evaluate_cmd
from qa.commands import train as train_cmd
from qa.data.batching import GROUP_KEY, group_batches
from qa.data.distractors import with_distractor_rows
from qa.train.losses import shared_norm_loss


def test_the_shared_softmax_matches_a_hand_computation():
    # Question 7 has two windows: the answer (start 2, end 3) in the second; question 9 one window, no
    # answer anywhere (its mass belongs on CLS). Padding (mask 0) gets no probability.
    start = torch.tensor([[0.5, 1.0, 2.0, 0.0], [0.1, 0.2, 3.0, 1.0], [1.5, 0.3, 0.0, 9.0]])
    end = torch.tensor([[0.0, 0.0, 1.0, 2.0], [0.4, 0.0, 0.5, 2.5], [0.2, 0.1, 0.7, 9.0]])
    batch = {
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]),
        "start_positions": torch.tensor([0, 2, 0]),
        "end_positions": torch.tensor([0, 3, 0]),
        GROUP_KEY: torch.tensor([7, 7, 9]),
    }

    def expected(logits, label):
        first = math.log(sum(math.exp(v) for row in logits[:2] for v in row)) - logits[1][label]
        second = math.log(sum(math.exp(v) for v in logits[2][:3])) - logits[2][0]
        return (first + second) / 2

    loss = shared_norm_loss(SimpleNamespace(start_logits=start, end_logits=end), batch)
    want = (expected(start.tolist(), 2) + expected(end.tolist(), 3)) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_batches_hold_whole_questions_and_every_window_once():
    groups = np.repeat(np.arange(9), [1, 5, 2, 3, 4, 1, 6, 2, 3])
    lengths = np.random.default_rng(0).integers(10, 300, size=len(groups))
    batches = group_batches(groups, lengths, 8, seed=3, epoch=1, group_by_length=True)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(groups)))
    for batch in batches:
        for group in set(groups[batch].tolist()):
            assert set(np.flatnonzero(groups == group)) <= set(batch.tolist())  # no question split
        assert len(batch) <= 8
    again = group_batches(groups, lengths, 8, seed=3, epoch=1, group_by_length=True)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    # Random order (here all 9 groups fall in one chunk, which length sorting orders alike every epoch).
    unsorted = group_batches(groups, lengths, 8, seed=3, epoch=1, group_by_length=False)
    other_epoch = group_batches(groups, lengths, 8, seed=3, epoch=2, group_by_length=False)
    assert any(not np.array_equal(a, b) for a, b in zip(unsorted, other_epoch))
    # Sorted by longest window within a chunk: the padding is no more than in random order.

    def padded(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    assert padded(batches) <= padded(unsorted)


def test_each_question_gets_its_own_paragraph_first_and_others_of_its_article_without_answers():
    columns = {
        "id": ["a", "b", "c"],
        "title": ["T", "T", "U"],
        "question": ["qa?", "qb?", "qc?"],
        "context": ["one", "two", "three"],
        "answers": [{"text": ["one"], "answer_start": [0]}] * 3,
    }
    columns["context"][1] = "two"
    rows, groups = with_distractor_rows({**columns, "title": ["T", "T", "T"]}, k=5, seed=0)
    assert groups.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # two other paragraphs each: all the article has
    first = [i for i, g in enumerate(groups) if g == 0]
    assert rows["context"][first[0]] == "one" and rows["answers"][first[0]]["text"] == ["one"]
    assert sorted(rows["context"][i] for i in first[1:]) == ["three", "two"]
    assert all(rows["answers"][i] == {"text": [], "answer_start": []} for i in first[1:])
    rows, groups = with_distractor_rows(columns, k=1, seed=0)  # "c" is alone in its article
    assert [rows["id"][i] for i in range(len(groups)) if groups[i] == 2] == ["c"]


def answer(context, question, text, index):
    return {"id": f"q{index}", "question": question, "answers": [{"text": text, "answer_start": context.index(text)}]}


@pytest.mark.slow
def test_training_with_distractors_picks_the_right_passage_of_its_training_questions(tiny_model_dir, tmp_path):
    # Seed 0: training pairs each question with the paragraphs evaluate.py --distractors gives it, so this
    # checks the whole path (rows, whole-question batches, shared softmax, ranking across passages) on a
    # model that has learned its data. The tiny model confuses the two "capital of" questions, hence 75.
    articles = [
        {
            "title": "Mixed",
            "paragraphs": [
                {"context": c, "qas": [answer(c, q, a, i)]}
                for i, (c, (q, a)) in enumerate(zip(CONTEXTS, QUESTIONS_AND_ANSWERS))
            ],
        }
    ]
    data = write_squad_json(tmp_path / "train.json", articles)
    out = tmp_path / "out"
    argv = base_args(tiny_model_dir, data, out, tmp_path, "--lr", "3e-3", "--batch-size", "16", "--max-steps", "200")
    summary = train_cmd.main(
        [*argv, "--distractors", "3", "--seed", "0", "--log-steps", "1", "--no-eval", "--no-epoch-checkpoints"]
    )
    losses = [row["loss"] for row in log_of(out)]
    assert summary["steps"] == 200 and losses[-1] <= 0.1 * losses[0]
    evaluate_argv = ["--ckpt", str(out), "--validation-file", str(data), "--distractors", "3", "--precision", "fp32"]
    metrics = evaluate_cmd.main([*evaluate_argv, "--output-dir", str(tmp_path / "e")])
    assert metrics["passage_accuracy"] >= 75.0 and metrics["f1"] >= 75.0
    settings = json.loads((out / "training_args.json").read_text())
    assert settings["distractors"] == 3


def test_distractors_with_a_teacher_or_a_negative_count_are_refused(tiny_model_dir, tmp_path, capsys):
    data = write_squad_json(tmp_path / "train.json")
    for extra, message in [
        (["--distractors", "-1"], "--distractors must be >= 0, got -1"),
        (["--distractors", "2", "--teacher", str(tiny_model_dir)], "--distractors and --teacher cannot be combined"),
    ]:
        with pytest.raises(SystemExit) as caught:
            train_cmd.main([*base_args(tiny_model_dir, data, tmp_path / "out", tmp_path), *extra])
        assert caught.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()
