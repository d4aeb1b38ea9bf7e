"""Several passages at once: how to rank spans of different passages, and what distractor training buys.

For the first --questions questions of the shared dev part, each read with --k other paragraphs of its
article (`qa.eval.distractors`, seed 0), every passage is answered on its own and the best span across
passages is chosen by each rule:
- raw span score (start + end logit): what predict.py, the server and evaluate.py --distractors use.
  A softmax shared by all windows of all passages ranks exactly as this does (one normaliser for all);
- the span's log-probability within its own window (the calibrated score is a monotone map of it, so
  it ranks the same): each passage's softmax normalised apart;
- a random passage's best span (the floor).
Prints F1, exact match and how often the right passage was chosen, and the own-paragraph F1 of the
same questions, for each checkpoint given. Then, for each checkpoint, the same questions go through
`predict.py --input` as records with `contexts` (the path users run): its F1 and passage accuracy,
and whether every answer's `contexts[passage][start:end]` is its text.

    PYTHONPATH=. python bench/distractors.py --ckpt MODEL [MODEL ...] [--questions 200] [--k 4]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "squad-v1.1" / "dev-v1.1-part1.json"


def best_by(found: list, field: str) -> int:
    """The passage whose best span is highest by ``field`` (passages without a span rank last)."""
    values = [getattr(prediction, field) for prediction in found]
    return max(range(len(found)), key=lambda p: values[p] if values[p] is not None else float("-inf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", nargs="+", required=True)
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    from qa.config.cli import settings_as_trained
    from qa.config.settings import DecodeSettings, WindowSettings
    from qa.data.loading import load_examples
    from qa.eval.answering import load_reader
    from qa.eval.distractors import distractor_sets
    from qa.eval.evaluator import answer_examples
    from qa.eval.metrics import squad_scores

    examples = load_examples(file=str(DEV), for_training=False, max_samples=args.questions)
    sets = distractor_sets(examples, args.k)
    golds = {str(i): list(g["text"]) for i, g in zip(examples["id"], examples["answers"])}
    print(f"{len(sets)} questions of {DEV.name}, each with up to {args.k} other paragraphs of its article")
    print("| checkpoint | rule | F1 | EM | right passage |")
    print("| --- | --- | --- | --- | --- |")
    for ckpt in args.ckpt:
        window = settings_as_trained(WindowSettings, {"ckpt": ckpt})
        reader = load_reader(ckpt, window, DecodeSettings(), None, args.precision)
        rows = [(index, passage) for index, item in enumerate(sets) for passage in item.question.passages]
        columns = {
            "id": [str(row) for row in range(len(rows))],
            "question": [sets[index].question.question for index, _ in rows],
            "context": [passage for _, passage in rows],
        }
        predictions = answer_examples(reader.model, reader.tokenizer, columns, reader.settings, reader.runtime)
        per_question: list[list] = [[] for _ in sets]
        for (index, _), prediction in zip(rows, predictions):
            per_question[index].append(prediction)
        rng = random.Random(0)
        rules = {
            "raw span score (adopted)": [best_by(found, "score") for found in per_question],
            "span log-prob in its window": [best_by(found, "log_prob") for found in per_question],
            "random passage": [rng.randrange(len(found)) for found in per_question],
        }
        for name, chosen in rules.items():
            answers = {item.question.id: found[c].text for item, found, c in zip(sets, per_question, chosen)}
            right = sum(c == item.gold_passage for item, c in zip(sets, chosen))
            scores = squad_scores(answers, golds)
            print(
                f"| {Path(ckpt).name} | {name} | {scores['f1']:.2f} | {scores['exact_match']:.2f} "
                f"| {100 * right / len(sets):.1f}% |"
            )
        own = answer_examples(reader.model, reader.tokenizer, examples, reader.settings, reader.runtime)
        scores = squad_scores({str(i): p.text for i, p in zip(examples["id"], own)}, golds)
        print(f"| {Path(ckpt).name} | own paragraph alone | {scores['f1']:.2f} | {scores['exact_match']:.2f} | |")
    for ckpt in args.ckpt:
        through_predict(ckpt, sets, golds, args.precision)


def through_predict(ckpt: str, sets: list, golds: dict, precision: str) -> None:
    from qa.eval.metrics import squad_scores

    with tempfile.TemporaryDirectory() as work:
        records = Path(work) / "questions.jsonl"
        lines = [
            json.dumps({"id": item.question.id, "question": item.question.question, "contexts": item.question.passages})
            for item in sets
        ]
        records.write_text("\n".join(lines) + "\n", encoding="utf-8")
        command = [sys.executable, "predict.py", "--ckpt", ckpt, "--input", str(records), "--precision", precision]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    by_id = {answer["id"]: answer for answer in answers}
    offsets_right = sum(
        item.question.passages[a["passage"]][a["start"] : a["end"]] == a["answer"]
        for item in sets
        for a in [by_id[item.question.id]]
    )
    right = sum(by_id[item.question.id]["passage"] == item.gold_passage for item in sets)
    scores = squad_scores({i: a["answer"] for i, a in by_id.items()}, golds)
    print(
        f"predict.py --input with contexts, {Path(ckpt).name}: F1 {scores['f1']:.2f}, EM {scores['exact_match']:.2f}, "
        f"right passage {100 * right / len(sets):.1f}%; contexts[passage][start:end] == answer for "
        f"{offsets_right} of {len(sets)} answers"
    )


if __name__ == "__main__":
    main()
