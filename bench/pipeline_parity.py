"""`from qa import pipeline` against transformers 4.57's question-answering pipeline (installed beside, in
a `pip install --target` directory) and against predict.py --input, on the first --questions questions
of the shared dev part, one thread per side, one side at a time.

Spans: the share of questions whose (start, end) equal transformers 4's, at its defaults and at
max_answer_len=30, in fp32. Speed: seconds to answer the list (the model already loaded) and whole
processes (import, load, answer), in fp32 and at this project's default precision (bf16 weights on a
CPU with native bf16); transformers 4 has no bf16 default, so its fp32 is the baseline.

    pip install --target /tmp/transformers4 "transformers==4.57.*"
    PYTHONPATH=. python bench/pipeline_parity.py --ckpt FINE_TUNED --transformers4 /tmp/transformers4
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

SIDE = """
import json, sys, time
began = time.perf_counter()
import torch
torch.set_num_threads(1)
from {module} import pipeline
questions = json.load(open(sys.argv[1]))
qa = pipeline("question-answering", model=sys.argv[2], device=-1{extra})
loaded = time.perf_counter()
found = {{}}
for max_answer_len in (15, 30):
    start = time.perf_counter()
    answers = qa(questions, max_answer_len=max_answer_len)
    seconds = time.perf_counter() - start
    found[max_answer_len] = {{
        "seconds": seconds,
        "spans": [[a["start"], a["end"]] for a in answers],
        "answers": [a["answer"] for a in answers],
        "scores": [a["score"] for a in answers],
    }}
print(json.dumps({{"load": loaded - began, "answers": found}}))
"""


def run_side(module: str, extra: str, questions: Path, ckpt: str, path: str | None) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    environment["PYTHONPATH"] = path if path else str(ROOT)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", SIDE.format(module=module, extra=extra), str(questions), ckpt],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
    )
    if done.returncode != 0:
        sys.exit(f"{module} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process"] = time.perf_counter() - began
    return result


def predict_input(questions: list[dict], ckpt: str, precision: str) -> float:
    """Whole-process seconds of predict.py --input on the same questions (its windows: 384/128, answers of
    at most 15 tokens, as the pipeline's defaults)."""
    with tempfile.TemporaryDirectory() as directory:
        lines = Path(directory) / "in.jsonl"
        lines.write_text("\n".join(json.dumps(q) for q in questions) + "\n")
        environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "predict.py", "--ckpt", ckpt, "--input", str(lines), "--no-progress"]
        command += ["--max-length", "384", "--stride", "128", "--max-answer-length", "15", "--precision", precision]
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT)
        if done.returncode != 0:
            sys.exit(f"predict.py failed:\n{done.stderr[-3000:]}")
        return time.perf_counter() - began


def scores_table(theirs: dict, ours_fp32: dict, ours_auto: dict, golds: dict) -> None:
    """Each side's score of its answer against whether that answer is exactly right (defaults)."""
    import numpy as np

    from qa.eval.metrics import v2_raw_scores
    from qa.eval.reliability import brier_score, expected_calibration_error

    print("| score | mean | EM of the answers | ECE | Brier |")
    print("| --- | --- | --- | --- | --- |")
    for name, side in (
        ("transformers 4 (start x end softmax of the window)", theirs),
        ("qa.pipeline, fp32", ours_fp32),
        ("qa.pipeline, default", ours_auto),
    ):
        answers = side["answers"]["15"]
        exact, _ = v2_raw_scores({str(n): a for n, a in enumerate(answers["answers"])}, golds)
        right = np.array([exact[str(n)] for n in range(len(golds))], dtype=float)
        score = np.array(answers["scores"], dtype=float)
        print(
            f"| {name} | {score.mean():.4f} | {100 * right.mean():.2f} | "
            f"{expected_calibration_error(score, right):.4f} | {brier_score(score, right):.4f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--transformers4", required=True, help="a --target directory holding transformers 4.57")
    parser.add_argument("--questions", type=int, default=1000)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    print(f"machine: {model_name}; one thread per side; first {args.questions} questions of {DEV.name}")

    data = json.loads(DEV.read_text())["data"]
    asked = [
        ({"question": qa["question"], "context": paragraph["context"]}, [a["text"] for a in qa["answers"]])
        for article in data
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ][: args.questions]
    questions = [question for question, _ in asked]
    golds = {str(n): gold for n, (_, gold) in enumerate(asked)}
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "questions.json"
        path.write_text(json.dumps(questions))
        theirs = run_side("transformers", "", path, args.ckpt, args.transformers4)
        ours_fp32 = run_side("qa", ', precision="fp32"', path, args.ckpt, None)
        ours_auto = run_side("qa", "", path, args.ckpt, None)
    for length in ("15", "30"):
        same = sum(a == b for a, b in zip(theirs["answers"][length]["spans"], ours_fp32["answers"][length]["spans"]))
        print(f"max_answer_len {length}, fp32: the same span as transformers 4 for {same} of {len(questions)}")
    rows = [
        ("transformers 4.57 pipeline, fp32", theirs, None),
        ("qa.pipeline, fp32", ours_fp32, predict_input(questions, args.ckpt, "fp32")),
        ("qa.pipeline, default (auto)", ours_auto, predict_input(questions, args.ckpt, "auto")),
    ]
    scores_table(theirs, ours_fp32, ours_auto, golds)
    base = theirs["answers"]["15"]["seconds"]
    print(
        "| side | answering the list | questions/s | vs transformers 4 | import + load + answer "
        "| predict.py --input, whole process |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, side, predict in rows:
        seconds = side["answers"]["15"]["seconds"]
        print(
            f"| {name} | {seconds:.1f} s | {len(questions) / seconds:.1f} | {base / seconds:.2f}x | "
            f"{side['load'] + seconds:.1f} s | {f'{predict:.1f} s' if predict else ''} |"
        )


if __name__ == "__main__":
    main()
