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

from qa.config.settings import DEFAULT_BATCH_TOKENS, DecodeSettings, WindowSettings
from qa.data.questions import Question
from qa.errors import QAError
from qa.eval.calibration import Calibrator, candidate_confidence, feature_settings, span_confidence
from qa.eval.decoding import Prediction
from qa.eval.evaluator import AnswerSettings, answer_examples
from qa.eval.passages import merge_passages
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
        """The best ``question.top_k`` answers of every question, as JSON objects. A question with several
        passages is one row per passage in the same batched pass (each passage tokenised once)."""
        # Positions, not the askers' ids, key the rows: ids may repeat and every question is answered.
        rows = [(index, passage) for index, item in enumerate(questions) for passage in item.passages]
        columns = {
            "id": [str(row) for row in range(len(rows))],
            "question": [questions[index].question for index, _ in rows],
            "context": [passage for _, passage in rows],
        }
        predictions = answer_examples(self.model, self.tokenizer, columns, self.settings, self.runtime, with_nbest=True)
        threshold, calibrator = self.settings.decode.null_threshold, self.settings.calibrator
        results, begin = [], 0
        for item in questions:
            mine = predictions[begin : begin + len(item.passages)]
            begin += len(item.passages)
            if item.contexts is None:
                found = answers_json(
                    mine[0], item.top_k, self.has_null_threshold, calibrator, threshold, item.min_confidence
                )
            else:
                found = passage_answers_json(
                    mine, item.top_k, self.has_null_threshold, calibrator, threshold, item.min_confidence
                )
            results.append(found)
        return results


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
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    *,
    calibrating: bool = False,
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
    decode = with_stored_threshold(decode, model)
    now = feature_settings(window, decode)
    if calibrator is not None and not calibrator.fits(now):
        if runtime.is_main:
            print(
                f"note: {checkpoint}'s calibrator was fitted under other settings ({calibrator.mismatch(now)}), "
                "so scores are the model's own span probabilities, not calibrated ones",
                file=sys.stderr,
            )
        calibrator = None
    batch = inference_batch_size(batch_size, runtime)
    settings = AnswerSettings(window, decode, batch, max_batch_tokens=max_batch_tokens, calibrator=calibrator)
    stored = getattr(model.config, CALIBRATION_KEY, None) is not None
    if calibrator is None and not stored and not calibrating and runtime.is_main:
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
    answer is right. Spans come in the order of their score (one context's spans share one
    normalizer). With ``with_null`` every object says whether it is that candidate. With
    ``min_confidence``: `select_answers`.
    """
    if not prediction.nbest:
        # No span to answer with (a context the tokenizer reads as empty): said, never a silent "".
        answers = [{"answer": "", "score": 0.0, "start": 0, "end": 0, "no_answer": True}]
    else:
        answers = [
            {
                "answer": candidate.text,
                "score": round(candidate_confidence(candidate, prediction, calibrator, null_threshold), 6),
                "start": candidate.start,
                "end": candidate.end,
            }
            for candidate in prediction.nbest
        ]
    if with_null:
        for answer in answers:
            answer["no_answer"] = answer["answer"] == ""
    return select_answers(answers, top_k, min_confidence)


def passage_answers_json(
    predictions: list[Prediction],
    top_k: int,
    with_null: bool = False,
    calibrator: Calibrator | None = None,
    null_threshold: float | None = None,
    min_confidence: float | None = None,
) -> list[dict[str, Any]]:
    """The best ``top_k`` answers across the passages of one question (`qa.eval.passages`), each with
    ``passage``, the index of its passage, and ``start`` / ``end`` into that passage."""
    ranked, _, _ = merge_passages(predictions, null_threshold, None)
    answers = []
    for item in ranked:
        if item.passage >= 0:
            score = span_confidence(item.log_prob, calibrator)
        else:
            score = candidate_confidence(item.candidate, item.prediction, calibrator, null_threshold)
        answer = {
            "answer": item.candidate.text,
            "score": round(score, 6),
            "start": item.candidate.start,
            "end": item.candidate.end,
            "passage": item.passage if item.passage >= 0 else None,
        }
        if with_null:
            answer["no_answer"] = item.passage < 0
        answers.append(answer)
    answers = answers or [{"answer": "", "score": 0.0, "start": 0, "end": 0, "passage": None}]
    return select_answers(answers, top_k, min_confidence)


def select_answers(answers: list[dict[str, Any]], top_k: int, min_confidence: float | None) -> list[dict[str, Any]]:
    """The first ``top_k`` of the ranked ``answers``; with ``min_confidence`` (selective answering) spans
    scored below it are dropped first, so the first answer is the same whatever ``top_k`` is. When no
    answer is left, one withheld "no answer" comes back (``"withheld": true``) with the best answer's
    score, told apart from a model's own abstention. Every answer then says whether it is "no answer"."""
    if min_confidence is None:
        return answers[:top_k]
    for answer in answers:
        answer["no_answer"] = answer["answer"] == ""
    kept = [answer for answer in answers if answer["no_answer"] or answer["score"] >= min_confidence]
    if not kept:
        withheld = {"answer": "", "score": answers[0]["score"], "start": 0, "end": 0, "no_answer": True}
        if "passage" in answers[0]:
            withheld["passage"] = None
        kept = [{**withheld, "withheld": True}]
    return kept[:top_k]


def shape_answers(answers: list[dict[str, Any]], question: Question) -> dict[str, Any] | list[dict[str, Any]]:
    """One question's answers as predict.py --input and the server return them: the best answer's
    object when one was asked for, else the list; with the asker's id, ``{"id", ...}`` or
    ``{"id", "answers": [...]}``."""
    if question.id is None:
        return answers[0] if question.top_k == 1 else answers
    if question.top_k == 1:
        return {"id": question.id, **answers[0]}
    return {"id": question.id, "answers": answers}
