"""How well the scores are calibrated, on held-out questions: today's n-best softmax against the span
log-probability, raw and mapped by Platt scaling or isotonic regression fitted on other questions.

The dev file's first --fit questions fit the calibrators; the rest are the held-out test. Prints ECE
(10 equal-width bins, score against exact match), Brier, the risk-coverage area, and exact match
among the answered at cut-offs 0.3 / 0.5 / 0.7 with their coverage; writes the reliability diagram.

    PYTHONPATH=. python bench/calibration.py --ckpt FINE_TUNED_DIR [--fit 2000] [--png bench/calibration.png]
"""

from __future__ import annotations

import argparse
import platform
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "squad-v1.1" / "dev-v1.1-part1.json"


def isotonic(x: np.ndarray, y: np.ndarray):
    """Pool-adjacent-violators: a non-decreasing step function of x fitted to y; returns a predictor."""
    order = np.argsort(x, kind="stable")
    values, weights, rights = [], [], []
    for xi, yi in zip(x[order], y[order].astype(float)):
        values.append(yi)
        weights.append(1.0)
        rights.append(xi)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            v = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            values[-2:], weights[-2:], rights[-2:] = [v], [w], [rights[-1]]
    edges, levels = np.array(rights), np.array(values)
    return lambda z: levels[np.minimum(np.searchsorted(edges, z), len(levels) - 1)]


def print_table(scores: dict[str, np.ndarray], correct: np.ndarray) -> None:
    """One markdown row per score: ECE, Brier, risk-coverage area, EM and coverage at 0.3 / 0.5 / 0.7
    (bench/calibration_v2.py prints its tables with it too)."""
    from qa.eval.reliability import brier_score, expected_calibration_error, risk_coverage

    print("| score | ECE | Brier | risk-coverage area | EM / coverage at 0.3 | at 0.5 | at 0.7 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, score in scores.items():
        _, area = risk_coverage(score, correct)
        cells = []
        for cut in (0.3, 0.5, 0.7):
            kept = score >= cut
            cells.append(f"{100 * correct[kept].mean():.1f} / {100 * kept.mean():.1f}%" if kept.any() else "- / 0%")
        print(
            f"| {name} | {expected_calibration_error(score, correct):.4f} | {brier_score(score, correct):.4f} "
            f"| {area:.4f} | {' | '.join(cells)} |"
        )


def answered(reader, examples):
    """The reader's answers to ``examples`` (with n-best lists) and whether each is exactly right (0/1);
    bench/calibration_bounds.py uses it too."""
    from qa.eval.evaluator import answer_examples
    from qa.eval.metrics import v2_raw_scores

    predictions = answer_examples(
        reader.model, reader.tokenizer, examples, reader.settings, reader.runtime, with_nbest=True
    )
    ids = list(examples["id"])
    golds = {i: list(g["text"]) for i, g in zip(ids, examples["answers"])}
    exact, _ = v2_raw_scores({i: p.text for i, p in zip(ids, predictions)}, golds)
    return predictions, np.array([exact[i] for i in ids], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--fit", type=int, default=2000)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--png", default=str(ROOT / "bench" / "calibration.png"))
    args = parser.parse_args()

    from qa.config.settings import DecodeSettings
    from qa.data.loading import load_examples
    from qa.eval.answering import load_reader
    from qa.eval.calibration import fit_calibrator, uncalibrated_confidence
    from qa.eval.evaluator import answer_examples
    from qa.eval.reliability import calibration_bins
    from qa.model.loading import load_config

    trained = load_config(args.ckpt)
    print(f"machine: {platform.processor() or platform.machine()}; checkpoint {args.ckpt} ({trained.model_type})")
    from qa.config.cli import settings_as_trained
    from qa.config.settings import WindowSettings

    window = settings_as_trained(WindowSettings, {"ckpt": args.ckpt})
    reader = load_reader(args.ckpt, window, DecodeSettings(), None, args.precision)
    examples = load_examples(file=str(DEV), for_training=False)
    predictions, correct = answered(reader, examples)
    log_probs = np.array([p.log_prob for p in predictions], dtype=float)
    nbest_softmax = np.array([p.nbest[0].probability for p in predictions], dtype=float)
    fit, test = slice(0, args.fit), slice(args.fit, None)
    platt = fit_calibrator(log_probs[fit], correct[fit], feature="span_log_prob")
    platt_logit = fit_calibrator(log_probs[fit], correct[fit])
    iso = isotonic(log_probs[fit], correct[fit])
    scores = {
        "n-best softmax (today's score)": nbest_softmax[test],
        "span probability exp(log p), uncalibrated": uncalibrated_confidence(log_probs[test]),
        f"Platt on log p (slope {platt.slope:.3f}, intercept {platt.intercept:.3f})": platt.confidence(log_probs[test]),
        f"Platt on logit p, what --calibrate fits (slope {platt_logit.slope:.3f}, intercept "
        f"{platt_logit.intercept:.3f})": platt_logit.confidence(log_probs[test]),
        "isotonic on log p": iso(log_probs[test]),
    }
    held = correct[test]
    print(
        f"fitted on the first {args.fit} questions of {DEV.name}, tested on the other {len(held)}; "
        f"EM of the answers {100 * held.mean():.2f}"
    )
    print_table(scores, held)
    # The same 300 questions both times: batches of other questions pad to other widths, and bf16
    # kernels round differently per shape, which is not what this compares.
    five = replace(reader.settings, decode=replace(reader.settings.decode, n_best=5))
    first = examples.select(range(300))
    small = answer_examples(reader.model, reader.tokenizer, first, five, reader.runtime, with_nbest=True)
    twenty = answer_examples(reader.model, reader.tokenizer, first, reader.settings, reader.runtime, with_nbest=True)
    pairs = [(a, b) for a, b in zip(small, twenty) if (a.start, a.end) == (b.start, b.end)]
    same = sum(abs(a.log_prob - b.log_prob) < 1e-9 for a, b in pairs)
    print(
        f"--n-best 5 against 20, first 300 questions: the same answer span for {len(pairs)}, and for {same} of "
        "those the same score"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 5))
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for name, score in scores.items():
        rows = [row for row in calibration_bins(score, held) if row["count"]]
        axes.plot([r["mean_score"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name[:40])
    axes.set_xlabel("mean score in bin")
    axes.set_ylabel("exact match in bin")
    axes.set_title(f"reliability, {len(held)} held-out SQuAD v1.1 dev questions")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(args.png, dpi=100)
    print(f"reliability diagram: {args.png}")


if __name__ == "__main__":
    main()
