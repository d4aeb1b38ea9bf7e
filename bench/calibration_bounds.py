"""Calibrators held to their data (issue #41): ECE of the fitted Platt line followed everywhere (the rule
before) against the same line held to its support (feature range and the Wilson bounds of its tails:
`qa.eval.calibration.Support`), in domain and on a shifted set, for a fine-tuned model and for a weak
one; and how often one question's top answers summed to more than 1 before `exclusive_scores`.

In domain: the shared dev part, calibrators fitted on its first --fit questions, measured on the rest.
Shifted: the same held-out questions with each context cut to the sentence holding the first gold
answer (short contexts put the span probability far above anything seen when fitting).

    PYTHONPATH=. python bench/calibration_bounds.py --ckpt FINE_TUNED [--ckpt WEAK --fit 300] [--precision fp32]
"""

from __future__ import annotations

import argparse
import platform
import re
import subprocess
from pathlib import Path

import numpy as np
from calibration import answered  # bench/calibration.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "squad-v1.1" / "dev-v1.1-part1.json"


def answer_sentence(context: str, start: int) -> tuple[str, int]:
    """The sentence of ``context`` holding character ``start`` and the offset it begins at."""
    bounds = [0] + [m.end() for m in re.finditer(r"(?<=[.!?])\s+", context)] + [len(context)]
    for begin, end in zip(bounds, bounds[1:]):
        if begin <= start < end:
            return context[begin:end].strip(), begin + (len(context[begin:end]) - len(context[begin:end].lstrip()))
    return context, 0


def shifted(examples):
    """Each context cut to the sentence holding its first gold answer (answers moved with it)."""
    rows = {"id": [], "question": [], "context": [], "answers": []}
    for row in examples:
        start = row["answers"]["answer_start"][0]
        sentence, begin = answer_sentence(row["context"], start)
        texts = [t for t, s in zip(row["answers"]["text"], row["answers"]["answer_start"]) if t in sentence]
        rows["id"].append(row["id"])
        rows["question"].append(row["question"])
        rows["context"].append(sentence)
        rows["answers"].append({"text": texts or row["answers"]["text"], "answer_start": [0] * len(texts or [0])})
    return rows


def line(calibrator, log_probs):
    """The fitted Platt line followed everywhere, as calibrators did before they were held to their data."""
    from qa.eval.calibration import _sigmoid, span_feature

    return _sigmoid(calibrator.slope * span_feature(log_probs, calibrator.feature) + calibrator.intercept)


def over_one(predictions, calibrator, top_k: int = 3, exclusive: bool = False) -> float:
    """Share of questions whose first ``top_k`` calibrated answers sum to more than 1."""
    from qa.eval.calibration import exclusive_scores

    count = 0
    for prediction in predictions:
        scores = [float(calibrator.confidence(c.log_prob)) for c in prediction.nbest if c.log_prob is not None]
        scores = exclusive_scores(scores) if exclusive else scores
        count += sum(scores[:top_k]) > 1 + 1e-9
    return count / len(predictions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", action="append", required=True)
    parser.add_argument("--fit", type=int, action="append")
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    fits = args.fit or [2000] * len(args.ckpt)

    from qa.config.cli import settings_as_trained
    from qa.config.settings import DecodeSettings, WindowSettings
    from qa.data.loading import load_examples
    from qa.eval.answering import load_reader
    from qa.eval.calibration import fit_calibrator
    from qa.eval.reliability import expected_calibration_error

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?")
    print(f"machine: {model_name} ({platform.machine()}); precision {args.precision}")
    examples = load_examples(file=str(DEV), for_training=False)
    print(
        "| model | fitted on (EM) | set | questions | EM | ECE: line followed | ECE: held to its data | scores held "
        "| top-3 sums > 1: before | after |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for ckpt, fit in zip(args.ckpt, fits):
        window = settings_as_trained(WindowSettings, {"ckpt": ckpt})
        reader = load_reader(ckpt, window, DecodeSettings(), None, args.precision, calibrating=True)
        predictions, correct = answered(reader, examples)
        log_probs = np.array([p.log_prob for p in predictions], dtype=float)
        calibrator = fit_calibrator(log_probs[:fit], correct[:fit])
        held_out = examples.select(range(fit, len(examples)))
        cut_predictions, cut_correct = answered(reader, shifted(held_out))
        cut_log_probs = np.array([p.log_prob for p in cut_predictions], dtype=float)
        sets = {
            "in domain": (predictions[fit:], log_probs[fit:], correct[fit:]),
            "shifted (answer's sentence)": (cut_predictions, cut_log_probs, cut_correct),
        }
        for name, (preds, lp, right) in sets.items():
            followed, held = line(calibrator, lp), calibrator.confidence(lp)
            changed = 100 * np.mean(np.abs(followed - held) > 1e-9)
            before, after = over_one(preds, calibrator), over_one(preds, calibrator, exclusive=True)
            print(
                f"| {Path(ckpt).name} | {fit} ({100 * correct[:fit].mean():.1f}) | {name} | {len(right)} | "
                f"{100 * right.mean():.2f} | {expected_calibration_error(followed, right):.4f} | "
                f"{expected_calibration_error(held, right):.4f} | {changed:.1f}% | {100 * before:.1f}% | "
                f"{100 * after:.1f}% |"
            )
        support = calibrator.support
        print(
            f"<!-- {Path(ckpt).name}: slope {calibrator.slope:.3f}, intercept {calibrator.intercept:.3f}, "
            "feature range "
            f"[{support.low_feature:.2f}, {support.high_feature:.2f}], scores held to [{support.low_score:.3f}, "
            f"{support.high_score:.3f}] -->"
        )


if __name__ == "__main__":
    main()
