"""evaluate.py --calibrate: fit the calibrator of a checkpoint's scores on an evaluation, store it with
the weights, and write result files that describe the scores as they now are."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from qa.data.windows import WindowLayout
from qa.errors import QAError
from qa.eval.answering import Reader
from qa.eval.calibration import MIN_QUESTIONS_TO_FIT, Calibrator, no_answer_confidence, no_answer_problem
from qa.eval.evaluator import Evaluation, Timings, answer_examples, score_answers, write_result_files
from qa.eval.reliability import expected_calibration_error
from qa.model.carried import store_carried


def check_calibration_data(examples: Any) -> None:
    """Refuse, before any work, data that cannot fit a calibrator: fewer questions than the fit needs
    answered (it is fitted on the questions the model answers), or no question with an answer (every
    answer would be wrong: nothing to tell right from wrong)."""
    total = len(examples["answers"])
    answerable = sum(bool(list(gold["text"])) for gold in examples["answers"])
    if total < MIN_QUESTIONS_TO_FIT or answerable == 0:
        raise QAError(
            f"--calibrate: {total} questions ({answerable} with an answer, {total - answerable} without); a "
            f"calibrator is fitted on at least {MIN_QUESTIONS_TO_FIT} questions that the model answers, some of "
            "them with an answer; nothing was evaluated or stored"
        )


def evaluate_and_calibrate(
    reader: Reader, examples: Any, output_dir: Path, *, save_nbest: bool, progress: bool, with_report: bool
) -> Evaluation | None:
    """Answer ``examples`` once; fit the calibrator on the answers (refused in one line, with nothing
    stored or written, when it cannot be fitted or cannot rank); store it in the checkpoint; write the
    result files scored under it. Returns the evaluation (None on ranks other than 0)."""
    checkpoint, settings = reader.checkpoint, reader.settings
    timings, layout = Timings(), list[WindowLayout]()
    predictions = answer_examples(
        reader.model,
        reader.tokenizer,
        examples,
        settings,
        reader.runtime,
        with_nbest=save_nbest,
        progress=progress,
        timings=timings,
        layout=layout,
    )
    if predictions is None:
        return None

    def scored() -> Evaluation:
        return score_answers(
            examples,
            predictions,
            settings,
            timings,
            layout[0],
            precision=reader.runtime.precision,
            save_nbest=save_nbest,
            with_report=with_report,
        )

    evaluation = scored()
    calibrator, problem = evaluation.calibration()
    if calibrator is None:
        raise QAError(f"--calibrate: {problem}; nothing was stored or written")
    replaced: Calibrator | None = settings.calibrator
    in_use = "the stored calibrator's" if replaced is not None else "the model's own"
    log_probs, correct = evaluation.span_log_probs, evaluation.span_correct
    before = expected_calibration_error(_confidences(replaced, log_probs), correct)
    settings.calibrator = calibrator
    evaluation = scored()
    after = expected_calibration_error(calibrator.confidence(log_probs), correct)
    store_carried(Path(checkpoint), calibration=calibrator.to_dict())
    write_result_files(output_dir, evaluation.files)
    what = f"replaced the stored calibrator (fitted on {replaced.fitted_on})" if replaced else "stored"
    print(
        f"calibrated on {len(log_probs)} answered questions: ECE {before:.4f} with {in_use} scores, {after:.4f} "
        f"calibrated (on the questions it was fitted on; measure on others); {what} in "
        f"{Path(checkpoint) / 'config.json'}",
        file=sys.stderr,
    )
    _say_no_answer_fit(evaluation, calibrator, replaced)
    return evaluation


def _confidences(calibrator: Calibrator | None, log_probs: Any) -> Any:
    from qa.eval.calibration import uncalibrated_confidence

    return calibrator.confidence(log_probs) if calibrator is not None else uncalibrated_confidence(log_probs)


def _say_no_answer_fit(evaluation: Evaluation, calibrator: Calibrator, replaced: Calibrator | None) -> None:
    margins, no_answer = evaluation.null_margins, evaluation.no_answer_right
    if margins is None or no_answer is None:
        return
    if not calibrator.calibrates_no_answer:
        reason = no_answer_problem(no_answer) or "its fitted slope cannot rank abstentions"
        print(f"note: 'no answer' scores stay uncalibrated: {reason}", file=sys.stderr)
        return
    threshold = evaluation.metrics.get("null_threshold")
    if replaced is not None and replaced.calibrates_no_answer:
        before, source = replaced.no_answer_confidence(margins), "the stored calibrator's"
    else:
        before, source = [no_answer_confidence(margin, 0.0, threshold) for margin in margins], "plain"
    print(
        f"calibrated 'no answer' on {len(margins)} questions: ECE {expected_calibration_error(before, no_answer):.4f} "
        f"with {source} scores, {expected_calibration_error(calibrator.no_answer_confidence(margins), no_answer):.4f} "
        "calibrated",
        file=sys.stderr,
    )
