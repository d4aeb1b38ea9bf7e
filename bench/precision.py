"""fp32 against CPU bf16 autocast, in one run: evaluate.py (whole process) and train.py (40 steps x 8 windows).

Prints whole-process seconds, identical-answer counts and F1 for evaluation, and seconds plus the two
loss curves for training.

    PYTHONPATH=. python bench/precision.py --ckpt FINE_TUNED_DIR --model PRETRAINED_DIR
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "squad-v1.1"


def timed(*command: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, *command], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a fine-tuned checkpoint, for evaluate.py")
    parser.add_argument("--model", required=True, help="a pretrained encoder, for train.py")
    parser.add_argument("--max-eval-samples", type=int, default=1000)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="precision-bench-"))

    answers, metrics = {}, {}
    for precision in ("fp32", "bf16"):
        seconds = timed(
            "evaluate.py",
            "--ckpt",
            args.ckpt,
            "--validation-file",
            str(DATA / "dev-v1.1-part1.json"),
            "--max-eval-samples",
            str(args.max_eval_samples),
            "--output-dir",
            str(out / precision),
            "--precision",
            precision,
            "--no-progress",
        )
        answers[precision] = json.loads((out / precision / "predictions.json").read_text())
        metrics[precision] = json.loads((out / precision / "metrics.json").read_text())
        print(
            f"evaluate.py {precision}: {seconds:.1f}s whole process, "
            f"inference {metrics[precision]['seconds']['inference']:.1f}s, "
            f"EM {metrics[precision]['exact_match']:.2f}, F1 {metrics[precision]['f1']:.2f}"
        )
    same = sum(answers["fp32"][key] == answers["bf16"][key] for key in answers["fp32"])
    moved = metrics["bf16"]["f1"] - metrics["fp32"]["f1"]
    print(f"identical answers bf16 vs fp32: {same}/{len(answers['fp32'])}; F1 moved {moved:+.2f}")

    curves = {}
    for precision in ("fp32", "bf16"):
        target = out / f"train-{precision}"
        seconds = timed(
            "train.py",
            "--model",
            args.model,
            "--train-file",
            str(DATA / "train-v1.1-first44.json"),
            "--output-dir",
            str(target),
            "--max-steps",
            "40",
            "--batch-size",
            "8",
            "--lr",
            "5e-5",
            "--log-steps",
            "1",
            "--seed",
            "0",
            "--no-eval",
            "--no-epoch-checkpoints",
            "--no-progress",
            "--precision",
            precision,
            "--cache-dir",
            str(out / "cache"),
        )
        curves[precision] = [json.loads(line)["loss"] for line in (target / "train_log.jsonl").read_text().splitlines()]
        print(f"train.py {precision}: {seconds:.1f}s whole process (40 steps x 8 windows at 384/128)")
    for step in (1, 10, 20, 30, 40):
        print(f"  loss at step {step}: fp32 {curves['fp32'][step - 1]:.4f}  bf16 {curves['bf16'][step - 1]:.4f}")


if __name__ == "__main__":
    main()
