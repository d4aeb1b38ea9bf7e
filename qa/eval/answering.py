"""A checkpoint made ready to answer: the reader.

evaluate.py, predict.py and the server load a model the one way written here (windows as
trained unless told otherwise, the null threshold stored with the model unless
``--null-threshold`` is given, device and precision from the runtime); the JSON shape of its
answers is `qa.eval.responses`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
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
from qa.eval.words import aligned_to_words, word_spans
from qa.files import DEFAULT_OUTPUT_DIR
from qa.model.carried import Carried, with_stored_threshold
from qa.model.loading import check_model_fits, load_qa_model, load_tokenizer, on_device
from qa.runtime.device import Runtime, inference_batch_size, precision_note, setup_runtime

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Reader:
    """A loaded QA model with everything needed to answer questions with it."""

    checkpoint: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    runtime: Runtime
    settings: AnswerSettings
    # The calibrator the model carries, whether or not it fits ``settings`` (the Python API's calls may
    # change the windows to ones it does fit); ``settings.calibrator`` is the one in use.
    stored_calibrator: Calibrator | None = None

    @property
    def has_null_threshold(self) -> bool:
        return self.settings.decode.null_threshold is not None

    def answer(
        self,
        questions: list[Question],
        *,
        align_to_words: bool = False,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """The best ``question.top_k`` answers of every question, as JSON objects. A question with several
        passages is one row per passage in the same batched pass (each passage tokenised once). Under
        torchrun every rank shares the work and rank 0 gets every answer (the others: an empty list).
        ``align_to_words``: spans widened to whole words and merged by text (`qa.eval.words`). ``on_batch``:
        `qa.eval.inference.predict_logits`'s progress."""
        # Positions, not the askers' ids, key the rows: ids may repeat and every question is answered.
        rows = [(index, passage) for index, item in enumerate(questions) for passage in item.passages]
        columns = {
            "id": [str(row) for row in range(len(rows))],
            "question": [questions[index].question for index, _ in rows],
            "context": [passage for _, passage in rows],
        }
        predictions = answer_examples(
            self.model, self.tokenizer, columns, self.settings, self.runtime, with_nbest=True, on_batch=on_batch
        )
        if predictions is None:  # a rank other than 0
            return []
        if align_to_words:
            words = word_spans(self.tokenizer, columns["context"])
            predictions = [
                aligned_to_words(prediction, spans, context)
                for prediction, spans, context in zip(predictions, words, columns["context"])
            ]
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


def check_checkpoint(checkpoint: str, window: WindowSettings) -> PretrainedConfig:
    """Refuse, before any work, a checkpoint that is missing or that these windows do not fit; returns its
    config (`load_reader` takes it, so the check runs once)."""
    if checkpoint == DEFAULT_OUTPUT_DIR and not Path(checkpoint).exists():
        raise QAError(f"no checkpoint at ./{DEFAULT_OUTPUT_DIR}: run train.py first, or pass --ckpt PATH")
    return check_model_fits(checkpoint, window)


def load_reader(
    checkpoint: str,
    window: WindowSettings,
    decode: DecodeSettings,
    batch_size: int | None,
    precision: str,
    max_batch_tokens: int = DEFAULT_BATCH_TOKENS,
    *,
    calibrating: bool = False,
    device: str | None = None,
    checked: PretrainedConfig | None = None,
) -> Reader:
    """Check the windows fit the model (unless ``checked``: the config `check_checkpoint` returned for
    them), then load model and tokenizer onto ``device`` (None: this process's GPU where there is one,
    else the CPU)."""
    config = checked if checked is not None else check_checkpoint(checkpoint, window)
    runtime = setup_runtime(precision, device, for_inference=True)
    dtype = torch.bfloat16 if runtime.bf16_weights else None
    model = on_device(load_qa_model(checkpoint, require_qa_head=True, dtype=dtype, config=config), runtime.device)
    tokenizer = load_tokenizer(checkpoint)
    if runtime.is_main:  # once the model loaded: a refused checkpoint stays a one-line error
        print(precision_note(runtime, precision), file=sys.stderr, flush=True)
    carried = Carried.of(model.config)
    decode = with_stored_threshold(decode, model)
    calibrator = _usable_calibrator(checkpoint, carried, feature_settings(window, decode), runtime, calibrating)
    batch = inference_batch_size(batch_size, runtime)
    settings = AnswerSettings(window, decode, batch, max_batch_tokens=max_batch_tokens, calibrator=calibrator)
    return Reader(checkpoint, model, tokenizer, runtime, settings, Calibrator.from_dict(carried.calibration))


def _usable_calibrator(
    checkpoint: str, carried: Carried, now: dict[str, int], runtime: Runtime, calibrating: bool
) -> Calibrator | None:
    """The calibrator the checkpoint carries, where it applies to these settings; each reason it does not
    (none stored, unreadable, fitted under other windows) and a precision other than the one it was fitted
    under are said in one line on stderr."""
    calibrator = Calibrator.from_dict(carried.calibration)

    def say(message: str) -> None:
        if runtime.is_main:
            print(f"note: {checkpoint}{message}", file=sys.stderr, flush=True)

    uncalibrated = "so scores are the model's own span probabilities, not calibrated ones"
    if carried.calibration is None:
        if not calibrating:
            say(f" has no calibrator, {uncalibrated} (evaluate.py --ckpt {checkpoint} --calibrate fits one)")
        return None
    if calibrator is None:
        if not calibrating:
            say(
                f"'s stored calibrator (config.json qa_calibration) cannot be read or was stored by an earlier "
                f"version, {uncalibrated} (evaluate.py --ckpt {checkpoint} --calibrate fits it again)"
            )
        return None
    if not calibrator.fits(now):
        say(f"'s calibrator was fitted under other settings ({calibrator.mismatch(now)}), {uncalibrated}")
        return None
    if calibrator.precision is not None and calibrator.precision != runtime.precision and not calibrating:
        say(
            f"'s calibrator was fitted on {calibrator.precision} logits and these are {runtime.precision} "
            f"(--precision {calibrator.precision} gives the scores it was fitted for)"
        )
    return calibrator
