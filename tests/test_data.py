import copy
import json

import numpy as np
import pytest
from helpers import SQUAD_ARTICLES, write_squad_json

from qa.data.loading import load_examples
from qa.errors import QAError


def test_nested_squad_json_loads_with_hub_columns(squad_file):
    examples = load_examples(file=squad_file, for_training=False)
    assert examples.column_names == ["id", "title", "context", "question", "answers"]
    assert examples["id"] == ["p1", "p2", "f1", "f2"]
    assert examples[1]["answers"] == {"text": ["Seine", "the river Seine"], "answer_start": [82, 72]}
    assert examples[2]["title"] == "Football"
    assert len(examples) == 4


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_flat_files_load_the_same_examples(tmp_path, squad_file, suffix):
    records = [dict(row) for row in load_examples(file=squad_file, for_training=False)]
    path = tmp_path / f"flat{suffix}"
    if suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    elif suffix == ".json":
        path.write_text(json.dumps(records))
    elif suffix == ".csv":
        import csv

        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            for record in records:
                writer.writerow({**record, "answers": json.dumps(record["answers"])})
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    loaded = load_examples(file=path, for_training=False)
    assert [dict(row) for row in loaded] == records


def test_max_samples_keeps_the_first_records(squad_file):
    assert load_examples(file=squad_file, for_training=False, max_samples=2)["id"] == ["p1", "p2"]


def error_of(path, for_training=False):
    with pytest.raises(QAError) as caught:
        load_examples(file=path, for_training=for_training)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_invalid_json_names_file_and_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"data": [\n{"title": "x",, }]}')
    message = error_of(path)
    assert str(path) in message and "line 2" in message


def test_invalid_json_line_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"id": "a", "question": "q?", "context": "c", "answers": {"text": ["c"], "answer_start": [0]}}
    path.write_text(json.dumps(good) + "\n{oops\n")
    message = error_of(path)
    assert str(path) in message and "line 2" in message


def mutated(tmp_path, change):
    articles = copy.deepcopy(SQUAD_ARTICLES)
    change(articles)
    return write_squad_json(tmp_path / "mutated.json", articles)


def test_missing_question_names_record_and_field(tmp_path):
    path = mutated(tmp_path, lambda a: a[0]["paragraphs"][0]["qas"][1].pop("question"))
    message = error_of(path)
    assert "'p2'" in message and "'question'" in message and "missing" in message


def test_missing_context_names_paragraph(tmp_path):
    path = mutated(tmp_path, lambda a: a[1]["paragraphs"][0].pop("context"))
    message = error_of(path)
    assert "data[1].paragraphs[0]" in message and "'context'" in message


@pytest.mark.parametrize("field", ["question", "context"])
def test_empty_question_or_context_is_refused(tmp_path, field):
    def blank(articles):
        if field == "question":
            articles[1]["paragraphs"][0]["qas"][0]["question"] = "   "
        else:
            articles[1]["paragraphs"][0]["context"] = ""

    message = error_of(mutated(tmp_path, blank))
    assert "'f1'" in message and f"'{field}'" in message and "empty" in message


def test_duplicate_ids_are_refused(tmp_path):
    path = mutated(tmp_path, lambda a: a[1]["paragraphs"][0]["qas"][1].update(id="p1"))
    message = error_of(path)
    assert "'p1'" in message and "duplicate" in message


def test_misaligned_answer_is_skipped_for_training_and_kept_for_eval(tmp_path, capsys):
    path = mutated(tmp_path, lambda a: a[0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start=3))
    train = load_examples(file=path, for_training=True)
    assert train["id"] == ["p2", "f1", "f2"]
    warning = capsys.readouterr().err
    assert "skipped 1" in warning and "'p1'" in warning
    assert load_examples(file=path, for_training=False)["id"] == ["p1", "p2", "f1", "f2"]


def test_bad_answer_start_type_is_refused(tmp_path):
    path = mutated(tmp_path, lambda a: a[0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="zero"))
    message = error_of(path)
    assert "'p1'" in message and "answer_start" in message


def test_unknown_suffix_and_missing_file(tmp_path):
    assert "no such file" in error_of(tmp_path / "nope.json")
    path = tmp_path / "data.txt"
    path.write_text("x")
    assert "unsupported file type" in error_of(path)


def test_unreachable_hub_says_so_and_shows_local_files(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'squad' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(QAError) as caught:
        load_examples("squad", "train", for_training=True)
    message = str(caught.value)
    assert "hub" in message and "--train-file" in message and "\n" not in message


def test_inference_batches_hold_at_most_the_token_budget_and_every_window_once():
    from qa.data.batching import length_sorted_batches, padded_length, token_bounded_parts

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 300, size=200)
    batches = length_sorted_batches(lengths, 16, max_tokens=1024)
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))
    for batch in batches:
        assert len(batch) <= 16
        assert len(batch) == 1 or len(batch) * padded_length(int(lengths[batch].max())) <= 1024
    assert [len(b) for b in length_sorted_batches(lengths, 16)] == [16] * 12 + [8]  # no budget: sizes only
    parts = token_bounded_parts(lengths[:40], 512)
    assert np.concatenate(parts).tolist() == list(range(40))  # in order, each once
    assert all(len(p) == 1 or len(p) * padded_length(int(lengths[:40][p].max())) <= 512 for p in parts)


@pytest.mark.parametrize("gold", ["\u200b", " \u00ad ", "\u0301", "\ufeff\u200d"])
def test_a_gold_answer_that_shows_nothing_is_refused_like_white_space(tmp_path, gold):
    context = f"The Denver Broncos won.{gold}"
    record = {"id": "q", "question": "Who won?", "context": context}
    record["answers"] = {"text": [gold], "answer_start": [context.index(gold)]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(record) + "\n")
    for for_training in (True, False):
        with pytest.raises(QAError, match="record 'q', field 'answers.text': holds no visible character"):
            load_examples(file=path, for_training=for_training)


CSV_EXPORT = (
    "question,context,answer_text,answer_start\n"
    '"Who won?","In 2016 the Denver Broncos won.",Denver Broncos,12\n'
    '"Who lost?","In 2016 the Denver Broncos won.",,\n'
    '"When?","In 2016 the Denver Broncos won.",2016,"3"\n'
)


def flat_shapes(tmp_path):
    """The shapes people have: a CSV export with answer_text / answer_start columns (no id), JSON Lines with
    SQuAD-style lists of answer objects (no id), and the hub's own shape."""
    csv_file = tmp_path / "export.csv"
    csv_file.write_text(CSV_EXPORT)
    context = "In 2016 the Denver Broncos won."
    rows = [
        {"question": "Who won?", "context": context, "answers": [{"text": "Denver Broncos", "answer_start": 12}]},
        {"question": "Who lost?", "context": context, "answers": []},
        {"question": "When?", "context": context, "answers": [{"text": "2016", "answer_start": 3}]},
    ]
    listed = tmp_path / "listed.jsonl"
    listed.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return csv_file, listed


def test_flat_files_in_the_shapes_people_have_load_with_ids_made_from_their_lines(tmp_path, capsys):
    csv_file, listed = flat_shapes(tmp_path)
    for path, first_line in ((csv_file, 2), (listed, 1)):
        examples = load_examples(file=path, for_training=False)
        assert examples["id"] == [str(first_line), str(first_line + 1), str(first_line + 2)]
        assert examples["answers"] == [
            {"text": ["Denver Broncos"], "answer_start": [12]},
            {"text": [], "answer_start": []},
            {"text": ["2016"], "answer_start": [3]},
        ]
        notes = [line for line in capsys.readouterr().err.splitlines() if "without an id" in line]
        assert notes == [
            f"note: {path}: 3 record(s) without an id; each was given its line or row number as its id (the same on "
            "every run)"
        ]


@pytest.mark.parametrize(
    ("row", "field", "why"),
    [
        ({"answer_text": "Denver", "answer_start": ""}, "answer_start", "is empty while the other is given"),
        ({"answers": [{"text": "Denver"}]}, "answers", "an answer object lacks text or answer_start"),
        ({"answers": "Denver"}, "answers", "not in an accepted shape"),
    ],
)
def test_a_flat_record_in_no_accepted_shape_names_its_line_field_and_the_shapes(tmp_path, row, field, why):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "Who won?", "context": "In 2016 the Denver Broncos won.", **row}) + "\n")
    with pytest.raises(QAError) as caught:
        load_examples(file=path, for_training=False)
    message = str(caught.value)
    assert (
        f"record 'line 1', field '{field}'" in message and why in message and "answer_text and answer_start" in message
    )


@pytest.mark.slow
def test_each_flat_shape_trains_and_evaluates(tiny_model_dir, tmp_path, capsys):
    from helpers import tiny_train_argv

    from qa.commands import evaluate as evaluate_cmd
    from qa.commands import train as train_cmd

    for path in flat_shapes(tmp_path):
        out = tmp_path / f"out-{path.stem}"
        argv = tiny_train_argv(tiny_model_dir, out, tmp_path / "cache", "--max-steps", "2", "--batch-size", "2")
        summary = train_cmd.main([*argv, "--train-file", str(path), "--validation-file", str(path)])
        assert summary["metrics"]["num_examples"] == 3 and "NoAns_total" in summary["metrics"]
        evaluated = evaluate_cmd.main(["--ckpt", str(out), "--output-dir", str(tmp_path / f"e-{path.stem}")])
        assert "evaluating on" in capsys.readouterr().err  # the run's own validation file, recorded
        assert evaluated["num_examples"] == 3
        assert set(json.loads((tmp_path / f"e-{path.stem}" / "predictions.json").read_text())) == {
            str(n) for n in ((2, 3, 4) if path.suffix == ".csv" else (1, 2, 3))
        }


def test_the_readme_s_examples_of_each_flat_shape_load(tmp_path):
    from helpers import REPO_ROOT

    section = (REPO_ROOT / "README.md").read_text().split("## Data files", 1)[1].split("\n## ", 1)[0]
    jsonl, csv_text = [block.split("\n", 1)[1] for block in section.split("```")[1:4:2]]
    (tmp_path / "readme.jsonl").write_text(jsonl)
    (tmp_path / "readme.csv").write_text(csv_text)
    for name in ("readme.jsonl", "readme.csv"):
        examples = load_examples(file=tmp_path / name, for_training=True)
        assert [a["text"] for a in examples["answers"]] == [["Denver Broncos"], []], name
