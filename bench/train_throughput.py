"""Training throughput: this project's train.py against the reference `Trainer` recipe, in one run.

Both train the same model on the same file for the same number of steps of the
same batch size at 384/128 and save the result; whole-process wall time
includes start-up, tokenisation (a fresh feature cache for train.py) and saving.

    python bench/train_throughput.py --model PATH [--steps 40 --batch-size 8]
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
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train-file", default="../shared/data/squad-v1.1/train-v1.1-first44.json")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--extra", nargs="*", default=[], help="extra train.py flags, e.g. --precision bf16")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "true"}
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    ours_seconds, _ = timed(
        [
            sys.executable,
            "train.py",
            "--model",
            args.model,
            "--train-file",
            args.train_file,
            "--output-dir",
            str(work / "ours"),
            "--cache-dir",
            str(work / "cache"),
            "--max-steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--no-eval",
            "--no-progress",
            "--log-steps",
            str(args.steps),
            *args.extra,
        ],
        env,
    )
    ours_log = json.loads((work / "ours" / "train_log.jsonl").read_text().splitlines()[-1])
    reference_seconds, out = timed(
        [
            sys.executable,
            "bench/reference_trainer.py",
            "--model",
            args.model,
            "--train-file",
            args.train_file,
            "--output-dir",
            str(work / "reference"),
            "--max-steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
        ],
        env,
    )
    reference = json.loads(out.strip().splitlines()[-1])
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.steps} steps x {args.batch_size} windows, "
        "384/128"
    )
    print("| recipe | whole process (s) | training loop (windows/s) |")
    print("| --- | --- | --- |")
    print(
        f"| reference Trainer, padded to 384 | {reference_seconds:.1f} | {reference['train_samples_per_second']:.2f} |"
    )
    print(f"| train.py | {ours_seconds:.1f} | {ours_log['windows_per_s']:.2f} |")
    print(f"speed-up, whole process: {reference_seconds / ours_seconds:.2f}x")


if __name__ == "__main__":
    main()
