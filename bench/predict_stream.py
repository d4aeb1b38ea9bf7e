"""predict.py --input at scale: peak memory and questions/s of whole processes, this checkout against
another (say, the code before streaming) in the same run, on questions of the shared dev part repeated
to the sizes asked; the two outputs are compared record for record where both finished.

    PYTHONPATH=. python bench/predict_stream.py --ckpt QA_MODEL_DIR --sizes 4000 16000 \
        [--baseline-root ../old-checkout] [--torchrun 2]

Without --ckpt a tiny random DistilBERT QA model (tests/helpers.py) is built in bench/out/. Each run is
a fresh `python predict.py --input FILE` under /usr/bin/time (peak resident memory of the process);
this checkout writes with --output, the baseline to standard output (what it has). One process at a
time: run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "predict_stream"


def questions(source: Path, count: int, path: Path) -> Path:
    """``count`` questions of ``source`` (nested SQuAD JSON), cycled, each with a distinct id."""
    if path.is_file() and sum(1 for _ in path.open()) == count:
        return path
    data = json.loads(source.read_text())
    pool = [
        (qa["question"], paragraph["context"])
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]
    with path.open("w") as handle:
        for index in range(count):
            question, context = pool[index % len(pool)]
            handle.write(json.dumps({"id": f"q{index}", "question": question, "context": context}) + "\n")
    return path


def measure(root: Path, command: list[str], stdout_path: Path | None, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak resident memory (MB) of one whole process."""
    timed = ["/usr/bin/time", "-f", "%M", *command]
    began = time.perf_counter()
    with stdout_path.open("wb") if stdout_path else open(os.devnull, "wb") as sink:
        result = subprocess.run(timed, cwd=root, stdout=sink, stderr=subprocess.PIPE, env=env, check=False)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"{command} failed: {result.stderr.decode()[-2000:]}")
    peak_kb = int(result.stderr.decode().strip().splitlines()[-1])
    return seconds, peak_kb // 1024


def tiny_model(tokenizer_from: Path | None) -> Path:
    """A 2-layer, 32-wide random DistilBERT QA model: with the test vocabulary (tests/helpers.py, which
    spells most words letter by letter: long windows), or with the tokenizer of ``tokenizer_from``."""
    if tokenizer_from is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from helpers import make_tiny_model_dir

        directory = OUT / "tiny-model"
        if not (directory / "config.json").is_file():
            make_tiny_model_dir(directory)
        return directory
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForQuestionAnswering

    directory = OUT / f"tiny-model-{tokenizer_from.name}"
    if not (directory / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_from)
        torch.manual_seed(0)
        config = DistilBertConfig(
            vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=2, n_heads=2, pad_token_id=tokenizer.pad_token_id
        )
        tokenizer.save_pretrained(directory)
        DistilBertForQuestionAnswering(config).save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path)
    parser.add_argument("--tokenizer-from", type=Path, help="without --ckpt: the tiny model takes this tokenizer")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared/data/squad-v1.1/dev-v1.1-part1.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4000, 16000])
    parser.add_argument("--baseline-root", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--baseline-max", type=int, default=10**9, help="largest size to give the baseline")
    parser.add_argument("--torchrun", type=int, default=0, help="also this many processes under torchrun (gloo)")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--extra", nargs="*", default=[], help="more predict.py flags for both")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    model = args.ckpt.resolve() if args.ckpt else tiny_model(args.tokenizer_from)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; model {model}")
    print("size | code | seconds | questions/s | peak MB | same records as this checkout")
    for size in args.sizes:
        data = questions(args.source, size, OUT / f"questions-{size}.jsonl")
        common = ["predict.py", "--ckpt", str(model), "--input", str(data), "--precision", args.precision, *args.extra]
        ours = OUT / f"answers-{size}.jsonl"
        seconds, peak = measure(
            ROOT, [sys.executable, *common, "--no-progress", "--output", str(ours), "--overwrite"], None, env
        )
        print(f"{size} | this checkout | {seconds:.1f} | {size / seconds:.1f} | {peak} | -", flush=True)
        if args.baseline_root is not None and size <= args.baseline_max:
            theirs = OUT / f"baseline-{size}.jsonl"
            seconds, peak = measure(args.baseline_root.resolve(), [sys.executable, *common], theirs, env)
            same = theirs.read_bytes() == ours.read_bytes()
            print(f"{size} | baseline | {seconds:.1f} | {size / seconds:.1f} | {peak} | {same}", flush=True)
        if args.torchrun:
            shared = OUT / f"torchrun-{size}.jsonl"
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
            command += [str(args.torchrun), *common, "--no-progress", "--output", str(shared), "--overwrite"]
            threads = {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // args.torchrun))}
            seconds, peak = measure(ROOT, command, None, threads)
            same = shared.read_bytes() == ours.read_bytes()
            print(
                f"{size} | torchrun x{args.torchrun} | {seconds:.1f} | {size / seconds:.1f} | "
                f"{peak} (largest process) | {same}",
                flush=True,
            )


if __name__ == "__main__":
    main()
