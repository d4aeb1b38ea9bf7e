"""Does `torch.compile` pay for inference? Each variant answers the same questions in a fresh process.

Variants (all with the default precision of this CPU, bf16 weights where it has native bf16):
- eager: today's path (each batch padded to its own longest window, rounded up to 8);
- compiled, shape buckets: each batch padded to one of a few widths so that the compiled graphs are
  reused (static shapes: one graph per bucket, plus one for the last, partial batch);
- compiled, dynamic: one graph with symbolic batch and length;
each compiled variant run twice: with a cold inductor cache (a fresh cache directory) and then warm
(the same directory: the FX graph cache and the autograd cache on disk, as a second process would
find them). The time is the whole call of the evaluator (windows, inference with every compile,
decoding) for the first --questions questions of --data, plus the process's own start-up.

    PYTHONPATH=. python bench/compile_inference.py --ckpt FINE_TUNED_DIR [--questions 1000] [--data FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "squad-v1.1" / "dev-v1.1-part1.json"
BUCKETS = (64, 128, 192, 256, 320, 384, 512)


def one_variant(args: argparse.Namespace) -> None:
    """In the child: load, answer, print one JSON line of timings and answers."""
    began = time.perf_counter()
    import torch

    import qa.data.batching as batching
    from qa.config.cli import settings_as_trained
    from qa.config.settings import DecodeSettings, WindowSettings
    from qa.data.loading import load_examples
    from qa.eval.answering import load_reader
    from qa.eval.evaluator import Timings, answer_examples

    window = settings_as_trained(WindowSettings, {"ckpt": args.ckpt})
    if args.max_length:
        window = WindowSettings(args.max_length, args.stride, window.max_question_length)
    reader = load_reader(args.ckpt, window, DecodeSettings(), None, args.precision)
    examples = load_examples(file=args.data, for_training=False).select(range(args.questions))
    model = reader.model
    if args.variant == "buckets":
        widest, rounded = window.max_length, batching.padded_length

        def bucketed(longest: int, multiple: int = batching.PAD_MULTIPLE) -> int:
            return next((b for b in BUCKETS if longest <= b <= widest), rounded(widest))

        batching.padded_length = bucketed
        model = torch.compile(model, dynamic=False)
    elif args.variant == "dynamic":
        model = torch.compile(model, dynamic=True)
    loaded = time.perf_counter()
    timings = Timings()
    predictions = answer_examples(model, reader.tokenizer, examples, reader.settings, reader.runtime, timings=timings)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "load_s": loaded - began,
                "answer_s": done - loaded,
                "inference_s": timings.inference,
                "windows": timings.num_windows,
                "answers": [[p.start, p.end] for p in predictions],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data", default=str(DEV))
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--variant", choices=["eager", "buckets", "dynamic"], help=argparse.SUPPRESS)
    parser.add_argument("--variants", nargs="+", default=["eager", "buckets", "dynamic"])
    args = parser.parse_args()
    if args.variant:
        one_variant(args)
        return

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "?",
    )
    print(
        f"machine: {cpu}, {os.cpu_count()} cores; {args.questions} questions of {Path(args.data).name}; "
        f"windows {args.max_length}/{args.stride}; precision {args.precision}"
    )
    base = [
        sys.executable,
        __file__,
        "--ckpt",
        args.ckpt,
        "--data",
        args.data,
        "--questions",
        str(args.questions),
        "--precision",
        args.precision,
        "--max-length",
        str(args.max_length),
        "--stride",
        str(args.stride),
    ]
    results, reference = {}, None
    for variant in args.variants:
        cache = tempfile.mkdtemp(prefix="inductor-")
        for run in ["cold", "warm"] if variant != "eager" else ["-"]:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCHINDUCTOR_CACHE_DIR": cache}
            began = time.perf_counter()
            done = subprocess.run([*base, "--variant", variant], capture_output=True, text=True, env=env, cwd=ROOT)
            wall = time.perf_counter() - began
            if done.returncode != 0:
                print(f"{variant} {run}: failed\n{done.stderr[-2000:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            reference = reference or row["answers"]
            same = sum(a == b for a, b in zip(row["answers"], reference))
            results[(variant, run)] = (wall, row, same)
    print("| variant | cache | whole process | load | evaluator (incl. compile) | inference | same spans as eager |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (variant, run), (wall, row, same) in results.items():
        print(
            f"| {variant} | {run} | {wall:.1f} s | {row['load_s']:.1f} s | {row['answer_s']:.1f} s "
            f"| {row['inference_s']:.1f} s | {same}/{len(row['answers'])} |"
        )


if __name__ == "__main__":
    main()
