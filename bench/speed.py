"""Speed levers against fp32 and against the reference recipes, in one run.

Evaluation: evaluate.py (whole process, the first 1,000 questions of dev-v1.1-part1.json at 384/128)
in each precision, against `bench/reference_evaluate.py` (windows padded to 384, `Trainer.predict`,
row-at-a-time post-processing), with answers identical to fp32 and EM/F1.
Training: train.py (40 steps x 8 windows at 384/128, seed 0, a fresh feature cache each run) in each
precision, against `bench/reference_trainer.py` (the `Trainer` recipe), with the loss curves.
Each configuration runs --rounds times, interleaved; tables give medians. The references need
`pip install accelerate`.

    PYTHONPATH=. python bench/speed.py --ckpt FINE_TUNED_DIR --model PRETRAINED_DIR [--precisions fp32 bf16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "squad-v1.1"


def timed(command: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.perf_counter()
    result = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def evaluation(args: argparse.Namespace, work: Path) -> None:
    common = ["--validation-file", str(DATA / "dev-v1.1-part1.json"), "--max-eval-samples", str(args.max_eval_samples)]
    seconds: dict[str, list[float]] = {name: [] for name in ["reference", *args.precisions]}
    inference: dict[str, list[float]] = {name: [] for name in ["reference", *args.precisions]}
    results: dict[str, dict] = {}
    answers: dict[str, dict] = {}
    for round_index in range(args.rounds):
        took, printed = timed(["bench/reference_evaluate.py", "--ckpt", args.ckpt, *common])
        seconds["reference"].append(took)
        results["reference"] = json.loads(printed.strip().splitlines()[-1])
        inference["reference"].append(results["reference"]["inference_s"])
        for precision in args.precisions:
            out = work / f"eval-{precision}-{round_index}"
            took, _ = timed(
                [
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
                    "--precision",
                    precision,
                    "--no-progress",
                ]
            )
            seconds[precision].append(took)
            metrics = json.loads((out / "metrics.json").read_text())
            results[precision] = metrics
            inference[precision].append(metrics["seconds"]["inference"])
            answers[precision] = json.loads((out / "predictions.json").read_text())
    reference_s = statistics.median(seconds["reference"])
    fp32_s = statistics.median(seconds["fp32"])
    print(
        f"\nevaluate.py: first {args.max_eval_samples} questions of dev-v1.1-part1.json, 384/128, "
        f"median of {args.rounds} round(s)"
    )
    print("| path | whole process | inference | vs reference | vs fp32 | answers identical to fp32 | EM | F1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    row = results["reference"]
    print(
        f"| reference (padded, Trainer.predict, row loop) | {reference_s:.1f} s "
        f"| {statistics.median(inference['reference']):.1f} s | 1.00x | | "
        f"| {row['exact_match']:.2f} | {row['f1']:.2f} |"
    )
    for precision in args.precisions:
        median = statistics.median(seconds[precision])
        same = sum(answers[precision][key] == answers["fp32"][key] for key in answers["fp32"])
        row = results[precision]
        print(
            f"| evaluate.py --precision {precision} | {median:.1f} s | {statistics.median(inference[precision]):.1f} s "
            f"| {reference_s / median:.2f}x | {fp32_s / median:.2f}x | {same}/{len(answers['fp32'])} "
            f"| {row['exact_match']:.2f} | {row['f1']:.2f} |"
        )
    fp32_row = results["fp32"]
    for precision in args.precisions[1:]:
        row = results[precision]
        em_gap, f1_gap = row["exact_match"] - fp32_row["exact_match"], row["f1"] - fp32_row["f1"]
        verdict = "meets" if abs(em_gap) <= 0.3 and abs(f1_gap) <= 0.3 else "misses"
        print(f"{precision} vs fp32: EM {em_gap:+.2f}, F1 {f1_gap:+.2f} ({verdict} the default rule: both within 0.3)")
    flops = inference_flops(args.ckpt, args.max_eval_samples)
    print(f"inference work: {flops / 1e12:.2f} TFLOP (linear layers and attention, per window of its own length)")
    for precision in args.precisions:
        rate = flops / statistics.median(inference[precision]) / 1e9
        print(f"  {precision}: {rate:.0f} GFLOP/s")
    for dtype in ("float32", "bfloat16"):
        print(f"  large {dtype} matmul on this CPU, same run: {matmul_rate(dtype):.0f} GFLOP/s")
    print("target: at least 4.5x the reference (goal 6x) on a CPU with native bf16, EM/F1 within 0.3 of fp32")


def matmul_rate(dtype: str, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a large square matmul in ``dtype``: the ceiling inference is measured against."""
    import torch

    a = torch.randn(size, size).to(getattr(torch, dtype))
    b = torch.randn(size, size).to(getattr(torch, dtype))
    a @ b  # warm-up
    began = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - began) / 1e9


def inference_flops(ckpt: str, max_eval_samples: int) -> float:
    """Multiply-adds x 2 of the encoder over the evaluation windows, each at its own length (the linear
    layers: 4 h^2 + 2 h ff per token and layer; attention: 2 L h per token and layer)."""
    from transformers import AutoConfig, AutoTokenizer

    from qa.config.settings import WindowSettings
    from qa.data.loading import load_examples
    from qa.data.windows import build_eval_windows

    config = AutoConfig.from_pretrained(ckpt)
    hidden = getattr(config, "hidden_size", None) or config.dim
    ff = getattr(config, "intermediate_size", None) or config.hidden_dim
    layers = getattr(config, "num_hidden_layers", None) or config.n_layers
    examples = load_examples(file=str(DATA / "dev-v1.1-part1.json"), for_training=False, max_samples=max_eval_samples)
    windows = build_eval_windows(examples, AutoTokenizer.from_pretrained(ckpt), WindowSettings(384, 128))
    lengths = windows.lengths.astype("float64")
    per_layer = lengths * (4 * hidden**2 + 2 * hidden * ff) + 2 * lengths**2 * hidden
    return float(2 * layers * per_layer.sum())


def training(args: argparse.Namespace, work: Path) -> None:
    steps, batch = str(args.steps), str(args.batch_size)
    train_file = str(DATA / "train-v1.1-first44.json")
    seconds: dict[str, list[float]] = {name: [] for name in ["reference", *args.precisions]}
    curves: dict[str, list[float]] = {}
    loop_rates: dict[str, float] = {}
    for round_index in range(args.rounds):
        took, printed = timed(
            [
                "bench/reference_trainer.py",
                "--model",
                args.model,
                "--train-file",
                train_file,
                "--output-dir",
                str(work / f"reference-{round_index}"),
                "--max-steps",
                steps,
                "--batch-size",
                batch,
            ]
        )
        seconds["reference"].append(took)
        loop_rates["reference"] = json.loads(printed.strip().splitlines()[-1])["train_samples_per_second"]
        for precision in args.precisions:
            out = work / f"train-{precision}-{round_index}"
            took, _ = timed(
                [
                    "train.py",
                    "--model",
                    args.model,
                    "--train-file",
                    train_file,
                    "--output-dir",
                    str(out),
                    "--cache-dir",
                    str(work / f"cache-{precision}-{round_index}"),
                    "--max-steps",
                    steps,
                    "--batch-size",
                    batch,
                    "--max-length",
                    "384",
                    "--stride",
                    "128",
                    "--lr",
                    "5e-5",
                    "--seed",
                    "0",
                    "--log-steps",
                    "1",
                    "--precision",
                    precision,
                    "--no-eval",
                    "--no-epoch-checkpoints",
                    "--no-progress",
                ]
            )
            seconds[precision].append(took)
            log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
            curves[precision] = [entry["loss"] for entry in log if "loss" in entry]
            loop_rates[precision] = log[-1]["windows_per_s"]  # the log's rate is over all steps so far
    reference_s = statistics.median(seconds["reference"])
    fp32_s = statistics.median(seconds["fp32"])
    print(
        f"\ntrain.py: {steps} steps x {batch} windows at 384/128 on train-v1.1-first44.json, whole process "
        f"(start-up, tokenisation, saving), median of {args.rounds} round(s)"
    )
    print("| recipe | whole process | training loop | vs reference | vs fp32 | loss at steps 1 / 10 / 20 / 30 / 40 |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(
        f"| reference Trainer, padded to 384 | {reference_s:.1f} s "
        f"| {loop_rates['reference']:.2f} windows/s | 1.00x | | |"
    )
    marks = [step for step in (1, 10, 20, 30, 40) if step <= args.steps]
    for precision in args.precisions:
        median = statistics.median(seconds[precision])
        losses = " / ".join(f"{curves[precision][step - 1]:.3f}" for step in marks)
        print(
            f"| train.py --precision {precision} | {median:.1f} s | {loop_rates[precision]:.2f} windows/s "
            f"| {reference_s / median:.2f}x | {fp32_s / median:.2f}x | {losses} |"
        )
    for precision in args.precisions:
        if precision != "fp32":
            gap = max(abs(a - b) for a, b in zip(curves[precision], curves["fp32"]))
            print(f"largest per-step loss difference, {precision} vs fp32: {gap:.4f}")
    print("target: at least 3x the reference Trainer recipe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a fine-tuned checkpoint, for evaluate.py")
    parser.add_argument("--model", required=True, help="a pretrained encoder, for train.py")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], help="the first must be fp32")
    parser.add_argument("--max-eval-samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", choices=["evaluation", "training"])
    args = parser.parse_args()
    if args.precisions[0] != "fp32":
        parser.error("--precisions must start with fp32, the baseline")
    import torch

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    work = Path(tempfile.mkdtemp(prefix="speed-bench-"))
    if args.only != "training":
        evaluation(args, work)
    if args.only != "evaluation":
        training(args, work)


if __name__ == "__main__":
    main()
