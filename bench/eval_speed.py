"""Evaluation speed: evaluate.py against the reference path (padded windows, Trainer.predict,
row-at-a-time post-processing), both on the same checkpoint and questions, in one run.

    python bench/eval_speed.py --ckpt DIR [--max-eval-samples 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    began = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return time.perf_counter() - began, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--validation-file", default="../shared/data/squad-v1.1/dev-v1.1-part1.json")
    parser.add_argument("--max-eval-samples", type=int, default=1000)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    common = ["--validation-file", args.validation_file, "--max-eval-samples", str(args.max_eval_samples)]
    ours_seconds, _ = timed(
        [
            sys.executable,
            "evaluate.py",
            "--ckpt",
            args.ckpt,
            *common,
            "--output-dir",
            str(out),
            "--max-length",
            "384",
            "--stride",
            "128",
            "--no-progress",
        ],
        env,
    )
    ours = json.loads((out / "metrics.json").read_text())
    reference_seconds, printed = timed(
        [sys.executable, "bench/reference_evaluate.py", "--ckpt", args.ckpt, *common], env
    )
    reference = json.loads(printed.strip().splitlines()[-1])
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; first {args.max_eval_samples} questions, 384/128")
    print("| path | whole process (s) | inference (s) | decoding (s) | EM | F1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| reference (padded, Trainer.predict, row loop) | {reference_seconds:.1f} | {reference['inference_s']:.1f} "
        f"| {reference['decoding_s']:.2f} | {reference['exact_match']:.2f} | {reference['f1']:.2f} |"
    )
    print(
        f"| evaluate.py | {ours_seconds:.1f} | {ours['seconds']['inference']:.1f} | {ours['seconds']['decoding']:.2f} "
        f"| {ours['exact_match']:.2f} | {ours['f1']:.2f} |"
    )
    print(f"speed-up, whole process: {reference_seconds / ours_seconds:.2f}x")


if __name__ == "__main__":
    main()
