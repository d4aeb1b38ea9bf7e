"""Calibration of a SQuAD v2.0 model, abstention included, on held-out articles.

The fit part (a SQuAD v2 JSON file) tunes the F1-best null threshold and fits the calibrator the way
`evaluate.py --calibrate` does (spans: Platt on the span log-probability; "no answer": Platt on the
null margin); the test part (other articles) measures, for every question, the score of what the model
outputs (its span, or "no answer") against whether that output is exactly right. Compared: the scores
without a calibrator (span probability; no answer: sigmoid(margin - threshold)), the span calibrator
alone, and both calibrators. Prints ECE, Brier, risk-coverage area, and exact match among the outputs
scored at or above 0.3 / 0.5 / 0.7 with their coverage; then the same for the abstentions alone.

    PYTHONPATH=. python bench/calibration_v2.py --ckpt V2_MODEL --fit FIT.json --test TEST.json
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
from calibration import print_table  # bench/ is this script's directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--fit", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()

    from qa.config.cli import settings_as_trained
    from qa.config.settings import DecodeSettings, WindowSettings
    from qa.data.loading import load_examples
    from qa.eval.answering import load_reader
    from qa.eval.calibration import prediction_confidence
    from qa.eval.decoding import decide_no_answer
    from qa.eval.evaluator import answer_examples, score_examples
    from qa.eval.metrics import v2_raw_scores

    window = settings_as_trained(WindowSettings, {"ckpt": args.ckpt})
    reader = load_reader(args.ckpt, window, DecodeSettings(), None, args.precision)
    plain = replace(reader.settings, calibrator=None, decode=replace(reader.settings.decode, null_threshold=None))
    fit_examples = load_examples(file=args.fit, for_training=False)
    fitted = score_examples(
        reader.model, reader.tokenizer, fit_examples, plain, reader.runtime, tune_null_threshold=True, with_report=False
    )
    threshold = fitted.metrics["best_null_threshold"]
    calibrator = fitted.fit_calibrator()
    span_only = replace(calibrator, null_slope=None, null_intercept=None, null_fitted_on=0)
    print(
        f"fit: {len(fit_examples)} questions of {args.fit}; F1-best threshold {threshold:.4f}; span calibrator "
        f"{calibrator.slope:.3f} / {calibrator.intercept:.3f} on {calibrator.fitted_on} answered; no answer "
        f"{calibrator.null_slope:.3f} / {calibrator.null_intercept:.3f} on {calibrator.null_fitted_on}"
    )

    test_examples = load_examples(file=args.test, for_training=False)
    predictions = answer_examples(reader.model, reader.tokenizer, test_examples, plain, reader.runtime)
    for prediction in predictions:
        prediction.no_answer = decide_no_answer(prediction, threshold)
    ids = list(test_examples["id"])
    golds = {i: list(g["text"]) for i, g in zip(ids, test_examples["answers"])}
    exact, f1 = v2_raw_scores({i: p.answer for i, p in zip(ids, predictions)}, golds)
    correct = np.array([exact[i] for i in ids], dtype=float)
    abstained = np.array([p.no_answer for p in predictions])
    unanswerable = sum(not any(golds[i]) for i in ids)
    print(
        f"test: {len(ids)} questions of {args.test} ({unanswerable} unanswerable); at the fitted threshold "
        f"exact {100 * correct.mean():.2f}, f1 {100 * np.mean([f1[i] for i in ids]):.2f}, abstained on "
        f"{int(abstained.sum())} ({100 * correct[abstained].mean():.1f}% of them right)"
    )
    scores = {
        name: np.array([prediction_confidence(p, chosen, threshold) for p in predictions])
        for name, chosen in [
            ("no calibrator (span probability; no answer: sigmoid(margin - threshold))", None),
            ("span calibrator only", span_only),
            ("span and no-answer calibrators", calibrator),
        ]
    }
    print("every output (span or no answer), score against exact match:")
    print_table(scores, correct)
    print(f"the {int(abstained.sum())} abstentions alone:")
    print_table({name: score[abstained] for name, score in scores.items()}, correct[abstained])
    print(f"the {int((~abstained).sum())} span answers alone:")
    print_table({name: score[~abstained] for name, score in scores.items()}, correct[~abstained])


if __name__ == "__main__":
    main()
