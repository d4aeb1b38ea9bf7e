"""`from qa import pipeline`: the question-answering pipeline that transformers 5 removed, called as
transformers 4's was, with this project's reader behind it (the one answering path of predict.py, the
server and --input: `qa.eval.answering.Reader`).

    qa = pipeline("question-answering", model="my_saved_model", device=-1)
    qa(question="Who won?", context="In 2016 the Denver Broncos won.")
    # {'score': 0.93, 'start': 12, 'end': 26, 'answer': 'Denver Broncos'}

The defaults are transformers 4's (`CALL_DEFAULTS`), so code written for the old pipeline gets the same
spans; `score` is this project's (the span's probability, calibrated where the model carries a
calibrator; README "Python" says how it differs from the old one).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from qa.api.arguments import (
    CALL_DEFAULTS,
    CallOptions,
    check_device,
    check_options,
    read_inputs,
)
from qa.config.settings import DecodeSettings, WindowSettings
from qa.data.questions import Question
from qa.errors import QAError

if TYPE_CHECKING:
    import torch

    from qa.eval.answering import Reader

TASK = "question-answering"
# Questions handed to the reader at once: windows are batched by length within it, and what one call of a
# long list holds in memory (windows, logits) stays bounded.
QUESTIONS_PER_PASS = 1024


def pipeline(
    task: str | None = None,
    model: str | None = None,
    tokenizer: str | None = None,
    device: int | str | torch.device | None = None,
    *,
    precision: str = "auto",
    **defaults: Any,
) -> QuestionAnsweringPipeline:
    """Load a question-answering model once and return a callable that answers with it.

    Args:
        task: ``"question-answering"`` (or left out).
        model: a local model directory (what train.py writes) or a hub id.
        tokenizer: the model's own when None; else the same directory or hub id as ``model``.
        device: as transformers took it: -1 or ``"cpu"``, a GPU index (0), ``"cuda:0"``, a `torch.device`;
            None: the first GPU where there is one, else the CPU.
        precision: ``auto`` (bf16 weights on CPUs with native bf16, bf16/fp16 autocast on GPUs), ``fp32``,
            ``bf16`` or ``fp16``, as predict.py's --precision.
        defaults: call keywords (``top_k=3``, ...) that every call uses unless it gives its own.
    """
    if task is not None and task != TASK:
        raise ValueError(f"task: only {TASK!r} is served here, got {task!r}")
    if not isinstance(model, str) or not model:
        raise TypeError(f"model: a model directory or hub id (a string) is needed, got {model!r}")
    if tokenizer is not None and tokenizer != model:
        raise ValueError(
            f"tokenizer: the model's own tokenizer is used (it is saved with the model); got {tokenizer!r} for "
            f"model {model!r}"
        )
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision: one of 'auto', 'fp32', 'bf16', 'fp16', got {precision!r}")
    options = check_options(defaults, CALL_DEFAULTS)
    chosen = check_device(device)
    from qa.eval.answering import load_reader

    window = _window(options)
    try:
        reader = load_reader(model, window, _decode(options), options.batch_size, precision, device=chosen)
    except QAError as error:
        raise ValueError(_in_argument_names(str(error))) from None
    return QuestionAnsweringPipeline(reader, options)


@dataclass
class QuestionAnsweringPipeline:
    """A loaded reader, answering as transformers 4's ``QuestionAnsweringPipeline`` did."""

    reader: Reader
    defaults: CallOptions

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any] | list[Any]:
        """``qa(question=..., context=...)``, ``qa({"question": ..., "context": ...})``, ``qa(question, context)``
        or a list of questions (a list in, a list out, in order). One question's answer is a dict
        ``{"score", "start", "end", "answer"}`` with ``top_k`` 1, else a list of them; with ``contexts``
        (several passages) each also says its ``passage``. Keywords: `qa.api.arguments.CALL_DEFAULTS`."""
        questions, single, overrides = read_inputs(args, kwargs)
        options = check_options(overrides, self.defaults)
        reader = self._reader_for(options)
        asked = [
            Question(item.question, item.context, None, options.top_k, options.min_confidence, item.contexts)
            for item in questions
        ]
        answers: list[list[dict[str, Any]]] = []
        for begin in range(0, len(asked), QUESTIONS_PER_PASS):
            answers += reader.answer(asked[begin : begin + QUESTIONS_PER_PASS], align_to_words=options.align_to_words)
        shaped = [_shape(found, options.top_k) for found in answers]
        return shaped[0] if single else shaped

    def _reader_for(self, options: CallOptions) -> Reader:
        """The reader under this call's windows and decoding (the same loaded model)."""
        window, decode = _window(options), _decode(options, self.reader.settings.decode.null_threshold)
        problems = window.problems() + decode.problems()
        if problems:
            raise ValueError(_in_argument_names(problems[0]))
        if window != self.reader.settings.window:
            from qa.model.loading import check_model_fits

            try:
                check_model_fits(self.reader.checkpoint, window)
            except QAError as error:
                raise ValueError(_in_argument_names(str(error))) from None
        calibrator = self.reader.stored_calibrator
        if calibrator is not None:
            from qa.eval.calibration import feature_settings

            now = feature_settings(window, decode)
            if not calibrator.fits(now):
                _note_once(
                    f"note: {self.reader.checkpoint}'s calibrator was fitted under other settings "
                    f"({_in_argument_names(calibrator.mismatch(now))}), so these scores are not calibrated"
                )
                calibrator = None
        batch_size = options.batch_size if options.batch_size is not None else self.reader.settings.batch_size
        settings = replace(
            self.reader.settings, window=window, decode=decode, batch_size=batch_size, calibrator=calibrator
        )
        return replace(self.reader, settings=settings)


def _window(options: CallOptions) -> WindowSettings:
    return WindowSettings(options.max_seq_len, options.doc_stride, options.max_question_len)


def _decode(options: CallOptions, stored_threshold: float | None = None) -> DecodeSettings:
    """transformers 4's ``handle_impossible_answer=True`` compared the null score with the best span's
    (a threshold of 0) where the model carries none; a stored threshold always applies."""
    threshold = stored_threshold
    if threshold is None and options.handle_impossible_answer:
        threshold = 0.0
    # With align_to_words transformers 4 took 2 x top_k + 10 token spans a window before merging those that
    # became one word span (their probabilities add up): the same candidates make the same sums here.
    n_best = 2 * options.top_k + 10 if options.align_to_words else max(DecodeSettings.n_best, options.top_k)
    return DecodeSettings(n_best=n_best, max_answer_length=options.max_answer_len, null_threshold=threshold)


_FLAG_NAMES = {
    "--max-length": "max_seq_len",
    "--stride": "doc_stride",
    "--max-question-length": "max_question_len",
    "--max-answer-length": "max_answer_len",
    "--n-best": "top_k",
}


def _in_argument_names(message: str) -> str:
    """A settings message in the pipeline's argument names rather than the command line's flags."""
    for flag, name in _FLAG_NAMES.items():
        message = message.replace(flag, name)
    return message


_said: set[str] = set()


def _note_once(message: str) -> None:
    if message not in _said:
        _said.add(message)
        print(message, file=sys.stderr, flush=True)


def _shape(answers: list[dict[str, Any]], top_k: int) -> dict[str, Any] | list[dict[str, Any]]:
    """transformers 4's answer objects: score, start, end, answer (and passage, withheld where they apply)."""
    shaped = []
    for answer in answers:
        item = {"score": answer["score"], "start": answer["start"], "end": answer["end"], "answer": answer["answer"]}
        for extra in ("passage", "withheld"):
            if extra in answer:
                item[extra] = answer[extra]
        shaped.append(item)
    return shaped[0] if top_k == 1 else shaped
