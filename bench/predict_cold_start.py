"""predict.py cold start: process start to printed answer, against the floor of importing torch and
transformers and loading the checkpoint (median of several runs each).

    python bench/predict_cold_start.py --ckpt DIR [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = (
    "import sys, torch, transformers\n"
    "from transformers import AutoModelForQuestionAnswering, AutoTokenizer\n"
    "AutoTokenizer.from_pretrained(sys.argv[1]); AutoModelForQuestionAnswering.from_pretrained(sys.argv[1])\n"
)
CONTEXT = (
    "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
    "a region in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway."
)


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    floor = median_seconds([sys.executable, "-c", FLOOR, args.ckpt], args.runs)
    predict = median_seconds(
        [
            sys.executable,
            "predict.py",
            "--ckpt",
            args.ckpt,
            "--question",
            "In what country is Normandy located?",
            "--context",
            CONTEXT,
        ],
        args.runs,
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; median of {args.runs} runs")
    print(f"import torch+transformers and load checkpoint: {floor:.2f}s")
    print(f"predict.py, start to printed answer:          {predict:.2f}s ({predict / floor:.2f}x)")


if __name__ == "__main__":
    main()
