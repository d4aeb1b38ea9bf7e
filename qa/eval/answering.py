"""A checkpoint made ready to answer, and the JSON shape of its answers.

evaluate.py, predict.py and the server load a model the one way written here (windows as
trained unless told otherwise, the null threshold stored with the model unless
``--null-threshold`` is given, device and precision from the runtime); predict.py and the
server shape answers the one way written here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qa.config.settings import DecodeSettings, WindowSettings
from qa.data.questions import Question
from qa.errors import QAError
from qa.eval.calibration import Calibrator, candidate_confidence
from qa.eval.decoding import Prediction
from qa.eval.evaluator import AnswerSettings, answer_examples
from qa.files import CALIBRATION_KEY, DEFAULT_OUTPUT_DIR
from qa.model.loading import check_model_fits, load_qa_model, load_tokenizer
from qa.model.runtime import Runtime, inference_batch_size, precision_note, setup_runtime
from qa.model.threshold import with_stored_threshold


@dataclass
class Reader:
    """A loaded QA model with everything needed to answer questions with it."""

    checkpoint: str
    model: Any
    tokenizer: Any
    runtime: Runtime
    settings: AnswerSettings

    @property
    def has_null_threshold(self) -> bool:
        return self.settings.decode.null_threshold is not None

    def answer(self, questions: list[Question]) -> list[list[dict[str, Any]]]:
        """The best ``question.top_k`` answers of every question, as JSON objects."""
        # Positions, not the askers' ids, key the examples: ids may repeat and every question is answered.
        columns = {
            "id": [str(index) for index in range(len(questions))],
            "question": [item.question for item in questions],
            "context": [item.context for item in questions],
        }
        predictions = answer_examples(self.model, self.tokenizer, columns, self.settings, self.runtime, with_nbest=True)
        return [
            answers_json(
                prediction,
                item.top_k,
                self.has_null_threshold,
                self.settings.calibrator,
                self.settings.decode.null_threshold,
                item.min_confidence,
            )
            for prediction, item in zip(predictions, questions, strict=True)
        ]


def check_checkpoint(checkpoint: str, window: WindowSettings) -> None:
    """Refuse, before any work, a checkpoint that is missing or that these windows do not fit."""
    if checkpoint == DEFAULT_OUTPUT_DIR and not Path(checkpoint).exists():
        raise QAError(f"no checkpoint at ./{DEFAULT_OUTPUT_DIR}: run train.py first, or pass --ckpt PATH")
    check_model_fits(checkpoint, window)


def load_reader(
    checkpoint: str,
    window: WindowSettings,
    decode: DecodeSettings,
    batch_size: int | None,
    precision: str,
) -> Reader:
    """Check the windows fit the model, then load model and tokenizer onto this process's device."""
    check_checkpoint(checkpoint, window)
    runtime = setup_runtime(precision, for_inference=True)
    dtype = torch.bfloat16 if runtime.bf16_weights else None
    model = load_qa_model(checkpoint, require_qa_head=True, dtype=dtype).to(runtime.device)
    tokenizer = load_tokenizer(checkpoint)
    if runtime.is_main:  # once the model loaded: a refused checkpoint stays a one-line error
        print(precision_note(runtime, precision), file=sys.stderr, flush=True)
    calibrator = Calibrator.from_dict(getattr(model.config, CALIBRATION_KEY, None))
    batch = inference_batch_size(batch_size, runtime)
    settings = AnswerSettings(window, with_stored_threshold(decode, model), batch, calibrator=calibrator)
    if calibrator is None and runtime.is_main:
        print(
            f"note: {checkpoint} has no calibrator, so scores are the model's own span probabilities, not "
            f"calibrated ones (evaluate.py --ckpt {checkpoint} --calibrate fits one)",
            file=sys.stderr,
        )
    return Reader(checkpoint, model, tokenizer, runtime, settings)


def answers_json(
    prediction: Prediction,
    top_k: int,
    with_null: bool = False,
    calibrator: Calibrator | None = None,
    null_threshold: float | None = None,
    min_confidence: float | None = None,
) -> list[dict[str, Any]]:
    """The best ``top_k`` answers of one prediction as JSON objects: answer, score, start, end.

    ``start`` / ``end`` are character offsets (code points) into the context. ``score`` is the
    answer's confidence (`qa.eval.calibration`): with a calibrator, the probability that it is exactly
    right; for the "no answer" candidate of a model with a null threshold, the probability that no
    answer is right. With ``with_null`` every object says whether it is that candidate. With
    ``min_confidence``, answers scored below it are dropped; when none is left, one "no answer" comes
    back with the best answer's score.
    """
    if not prediction.nbest:
        answers = [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
    else:
        answers = [
            {
                "answer": candidate.text,
                "score": round(candidate_confidence(candidate, prediction, calibrator, null_threshold), 6),
                "start": candidate.start,
                "end": candidate.end,
            }
            for candidate in prediction.nbest[:top_k]
        ]
    if with_null or min_confidence is not None:
        for answer in answers:
            answer["no_answer"] = answer["answer"] == ""
    if min_confidence is not None:
        kept = [answer for answer in answers if answer["no_answer"] or answer["score"] >= min_confidence]
        if not kept:
            kept = [{"answer": "", "score": answers[0]["score"], "start": 0, "end": 0, "no_answer": True}]
        answers = kept
    return answers


def shape_answers(answers: list[dict[str, Any]], question: Question) -> dict[str, Any] | list[dict[str, Any]]:
    """One question's answers as predict.py --input and the server return them: the best answer's
    object when one was asked for, else the list; with the asker's id, ``{"id", ...}`` or
    ``{"id", "answers": [...]}``."""
    if question.id is None:
        return answers[0] if question.top_k == 1 else answers
    if question.top_k == 1:
        return {"id": question.id, **answers[0]}
    return {"id": question.id, "answers": answers}
