"""A checkpoint made ready to answer: the reader.

evaluate.py, predict.py and the server load a model the one way written here (windows as
trained unless told otherwise, the null threshold stored with the model unless
``--null-threshold`` is given, device and precision from the runtime); the JSON shape of its
answers is `qa.eval.responses`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from qa.config.settings import DEFAULT_BATCH_TOKENS, DecodeSettings, WindowSettings
from qa.data.questions import Question
from qa.errors import QAError
from qa.eval.calibration import Calibrator, feature_settings
from qa.eval.evaluator import AnswerSettings, answer_examples
from qa.eval.responses import answers_json, passage_answers_json
from qa.files import DEFAULT_OUTPUT_DIR
from qa.model.carried import Carried, with_stored_threshold
from qa.model.loading import check_model_fits, load_qa_model, load_tokenizer, on_device
from qa.runtime.device import Runtime, inference_batch_size, precision_note, setup_runtime

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Reader:
    """A loaded QA model with everything needed to answer questions with it."""

    checkpoint: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    runtime: Runtime
    settings: AnswerSettings

    @property
    def has_null_threshold(self) -> bool:
        return self.settings.decode.null_threshold is not None

    def answer(self, questions: list[Question]) -> list[list[dict[str, Any]]]:
        """The best ``question.top_k`` answers of every question, as JSON objects. A question with several
        passages is one row per passage in the same batched pass (each passage tokenised once). Under
        torchrun every rank shares the work and rank 0 gets every answer (the others: an empty list)."""
        # Positions, not the askers' ids, key the rows: ids may repeat and every question is answered.
        rows = [(index, passage) for index, item in enumerate(questions) for passage in item.passages]
        columns = {
            "id": [str(row) for row in range(len(rows))],
            "question": [questions[index].question for index, _ in rows],
            "context": [passage for _, passage in rows],
        }
        predictions = answer_examples(self.model, self.tokenizer, columns, self.settings, self.runtime, with_nbest=True)
        if predictions is None:  # a rank other than 0
            return []
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
    model = on_device(load_qa_model(checkpoint, require_qa_head=True, dtype=dtype), runtime.device)
    tokenizer = load_tokenizer(checkpoint)
    if runtime.is_main:  # once the model loaded: a refused checkpoint stays a one-line error
        print(precision_note(runtime, precision), file=sys.stderr, flush=True)
    carried = Carried.of(model.config)
    calibrator = Calibrator.from_dict(carried.calibration)
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
    if calibrator is None and carried.calibration is None and not calibrating and runtime.is_main:
        print(
            f"note: {checkpoint} has no calibrator, so scores are the model's own span probabilities, not "
            f"calibrated ones (evaluate.py --ckpt {checkpoint} --calibrate fits one)",
            file=sys.stderr,
        )
    return Reader(checkpoint, model, tokenizer, runtime, settings)
