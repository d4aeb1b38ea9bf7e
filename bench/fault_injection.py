"""Kill train.py at random points (steps, checkpoint writes, pruning) and check nothing is lost.

A tiny DistilBERT (built here, nothing downloaded) trains with a checkpoint every
step and --save-total-limit 2, so a random SIGKILL often lands inside a
checkpoint write or a prune. After every kill, every directory that looks like a
checkpoint must load (model, tokenizer, training state); the run then resumes
with --resume. When it finally completes, its weights must equal those of an
uninterrupted run. Prints one line per kill and a summary.

    PYTHONPATH=. python bench/fault_injection.py --kills 20
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))


def train_command(model: Path, data: Path, out: Path, cache: Path, steps: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "train.py",
        "--model",
        str(model),
        "--train-file",
        str(data),
        "--output-dir",
        str(out),
        "--cache-dir",
        str(cache),
        "--max-length",
        "48",
        "--stride",
        "16",
        "--batch-size",
        "1",
        "--max-steps",
        str(steps),
        "--save-steps",
        "1",
        "--save-total-limit",
        "2",
        "--lr",
        "1e-3",
        "--no-progress",
        *extra,
    ]


def check_checkpoints(out: Path) -> int:
    """Load everything that looks like a checkpoint; raise if one does not load."""
    from qa.model.loading import load_qa_model, load_tokenizer
    from qa.train.checkpoint import STATE_FILE, load_training_state

    count = 0
    for directory in sorted(out.glob("checkpoint-*")):
        assert (directory / STATE_FILE).is_file(), f"{directory} has no training state"
        load_qa_model(str(directory), require_qa_head=True)
        load_tokenizer(str(directory))
        load_training_state(directory)
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from helpers import make_tiny_model_dir, write_squad_json
    from safetensors.torch import load_file

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="qa-faults-"))
    model = make_tiny_model_dir(work / "model")
    data = write_squad_json(work / "train.json")
    cache = work / "cache"

    began = time.perf_counter()
    subprocess.run(train_command(model, data, work / "clean", cache, args.steps), cwd=REPO_ROOT, check=True)
    clean_seconds = time.perf_counter() - began
    print(f"uninterrupted run: {clean_seconds:.1f}s for {args.steps} steps")

    kills = checked = rounds = 0
    worst = 0.0
    while kills < args.kills:
        rounds += 1
        out = work / f"killed-{rounds}"
        while True:
            if list(out.glob("checkpoint-*")):
                resume = ["--resume"]
            else:
                resume = ["--overwrite-output-dir"] if out.exists() else []
            process = subprocess.Popen(
                train_command(model, data, out, cache, args.steps, *resume),
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            # Most of a run's first seconds are imports: aim at the training half.
            if kills < args.kills:
                time.sleep(rng.uniform(0.4 * clean_seconds, clean_seconds))
            if process.poll() is None and kills < args.kills:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
                checked += check_checkpoints(out)
                steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
                leftovers = sorted(p.name for p in out.iterdir() if p.name.endswith((".tmp", ".deleting")))
                print(f"kill {kills} (round {rounds}): checkpoints {steps} all load; leftovers {leftovers or 'none'}")
                continue
            _, err = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"run failed after {kills} kills: {err[-2000:]}")
            break
        clean = load_file(str(work / "clean" / "model.safetensors"))
        killed = load_file(str(out / "model.safetensors"))
        difference = max((clean[name] - killed[name]).abs().max().item() for name in clean)
        worst = max(worst, difference)
        print(f"round {rounds} completed; final weights vs uninterrupted: max abs difference {difference:.3g}")
    print(
        f"{kills} kills in {rounds} runs, {checked} checkpoint loads after kills, all fine; "
        f"final weights vs uninterrupted: max abs difference {worst:.3g}"
    )
    if worst > 1e-6:
        raise SystemExit("final weights differ from the uninterrupted run")


if __name__ == "__main__":
    main()
