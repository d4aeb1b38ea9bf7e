"""What `qa.api.pipeline` accepts, checked before any model work: the call forms of transformers 4's
question-answering pipeline, its keywords and their defaults, and the device. Bad input raises
`TypeError` (a wrong type) or `ValueError` (a wrong value) with one sentence naming the argument."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from qa.data.questions import CONFIDENCE_RANGE, QuestionProblem, check_text_field

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class CallOptions:
    """The keywords of a call, with transformers 4's defaults (its ``QuestionAnsweringPipeline``), so that
    code written for it gets the same spans. predict.py's own defaults differ in one place: its longest
    answer is 30 tokens (``max_answer_len`` here: 15), and its windows are the ones the model was trained with."""

    top_k: int = 1
    doc_stride: int = 128
    max_answer_len: int = 15
    max_seq_len: int = 384
    max_question_len: int = 64
    handle_impossible_answer: bool = False
    align_to_words: bool = True
    batch_size: int | None = None  # windows per forward pass; None: the reader's (8 on a CPU, 64 on a GPU)
    min_confidence: float | None = None  # answers scored below it come back withheld, as predict.py's


CALL_DEFAULTS = CallOptions()
_POSITIVE_INTS = ("top_k", "max_answer_len", "max_seq_len", "max_question_len", "batch_size")
_FLAGS = ("handle_impossible_answer", "align_to_words")


def check_options(given: dict[str, Any], defaults: CallOptions) -> CallOptions:
    """``defaults`` with the keywords ``given``, each checked."""
    names = [item.name for item in fields(CallOptions)]
    for name, value in given.items():
        if name not in names:
            raise TypeError(f"unknown keyword argument {name!r} (accepted: {', '.join(names)})")
        if name in _POSITIVE_INTS:
            if value is None and name == "batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name}: an integer is needed, got {value!r}")
            if value < 1:
                raise ValueError(f"{name}: must be at least 1, got {value}")
        elif name == "doc_stride":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"doc_stride: an integer is needed, got {value!r}")
            if value < 0:
                raise ValueError(f"doc_stride: must be at least 0, got {value}")
        elif name in _FLAGS:
            if not isinstance(value, bool):
                raise TypeError(f"{name}: True or False is needed, got {value!r}")
        elif name == "min_confidence" and value is not None:
            low, high = CONFIDENCE_RANGE
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"min_confidence: a number is needed, got {value!r}")
            if not low <= value <= high:
                raise ValueError(f"min_confidence: must be from {low} to {high}, got {value}")
    return replace(defaults, **given)


def check_device(device: Any) -> str | None:
    """transformers' ``device`` as a torch device string (None: the default choice): -1 and ``"cpu"`` are
    the CPU, an index or ``"cuda:N"`` a GPU, which must exist here."""
    import torch

    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, int | str | torch.device):
        raise TypeError(f"device: -1, a GPU index, a device name such as 'cuda:0', or a torch.device, got {device!r}")
    if isinstance(device, int):
        if device < -1:
            raise ValueError(f"device: -1 (the CPU) or a GPU index, got {device}")
        chosen = torch.device("cpu") if device == -1 else torch.device("cuda", device)
    else:
        try:
            chosen = torch.device(device)
        except RuntimeError:
            raise ValueError(f"device: not a device name: {device!r}") from None
    if chosen.type == "cuda":
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = chosen.index or 0
        if index >= available:
            where = f"this machine has {available} CUDA GPU{'s' if available != 1 else ''}"
            raise ValueError(f"device={device!r}: {where}; use device=-1 or 'cpu' for the CPU")
    elif chosen.type != "cpu":
        raise ValueError(f"device={device!r}: only the CPU and CUDA GPUs are supported")
    return str(chosen)


@dataclass
class Asked:
    """One question as given: its text and its passage (or passages)."""

    question: str
    context: str
    contexts: list[str] | None = None


_INPUT_KEYS = ("question", "context", "contexts")


def read_inputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[Asked], bool, dict[str, Any]]:
    """The questions of a call, whether it was one question (answered with one answer object, not a list),
    and the remaining keywords (the options). The forms: ``question=, context=`` (or ``contexts=``), a
    dict, a list of dicts, ``(question, context)`` positionally, and lists of questions and contexts
    (paired, or one of them a single string shared by all)."""
    options = {name: value for name, value in kwargs.items() if name not in _INPUT_KEYS}
    given = {name: kwargs[name] for name in _INPUT_KEYS if name in kwargs}
    if args and given:
        raise TypeError("give the questions either positionally or as question=/context= keywords, not both")
    if len(args) == 2 and all(isinstance(item, str) for item in args):
        return [_asked({"question": args[0], "context": args[1]}, None)], True, options
    if len(args) == 1:
        value = args[0]
        if isinstance(value, dict):
            return [_asked(value, None)], True, options
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("the list of questions is empty")
            return [_asked(item, index) for index, item in enumerate(value)], False, options
        raise TypeError(f"a question is a dict with 'question' and 'context', got {type(value).__name__}")
    if args:
        raise TypeError(
            f"expected one dict or list of dicts, or (question, context); got {len(args)} positional arguments"
        )
    if not given:
        raise TypeError("no question given: call with question=... and context=...")
    single = not any(isinstance(given.get(name), list | tuple) for name in ("question", "context"))
    return _keyword_questions(given), single, options


def _keyword_questions(given: dict[str, Any]) -> list[Asked]:
    question, context = given.get("question"), given.get("context")
    if "contexts" in given:
        if "context" in given:
            raise ValueError("contexts: give context or contexts (several passages), not both")
        if isinstance(question, list | tuple):
            return [
                _asked({"question": item, "contexts": given["contexts"]}, index) for index, item in enumerate(question)
            ]
        return [_asked({"question": question, "contexts": given["contexts"]}, None)]
    questions = list(question) if isinstance(question, list | tuple) else None
    contexts = list(context) if isinstance(context, list | tuple) else None
    if questions is None and contexts is None:
        return [_asked({"question": question, "context": context}, None)]
    if questions is not None and contexts is not None and len(questions) != len(contexts):
        raise ValueError(f"question and context: lists of different lengths ({len(questions)} and {len(contexts)})")
    count = len(questions if questions is not None else contexts or [])
    if count == 0:
        raise ValueError("the list of questions is empty")
    return [
        _asked(
            {
                "question": questions[index] if questions is not None else question,
                "context": contexts[index] if contexts is not None else context,
            },
            index,
        )
        for index in range(count)
    ]


def _asked(item: Any, index: int | None) -> Asked:
    """One question checked: every field a non-empty string with a visible character."""
    where = f" (item {index})" if index is not None else ""
    if not isinstance(item, dict):
        raise TypeError(f"question{where}: a dict with 'question' and 'context' is needed, got {type(item).__name__}")
    unknown = sorted(str(key) for key in item if key not in _INPUT_KEYS)
    if unknown:
        raise ValueError(f"{unknown[0]}{where}: not a field of a question ({', '.join(_INPUT_KEYS)})")
    question = _text("question", item.get("question"), where)
    if "contexts" in item and item["contexts"] is not None:
        if "context" in item:
            raise ValueError(f"contexts{where}: give context or contexts (several passages), not both")
        passages = item["contexts"]
        if not isinstance(passages, list | tuple) or not passages:
            raise TypeError(f"contexts{where}: a non-empty list of passages is needed")
        checked = [_text(f"contexts[{n}]", passage, where) for n, passage in enumerate(passages)]
        return Asked(question, "", checked)
    return Asked(question, _text("context", item.get("context"), where))


def _text(name: str, value: Any, where: str) -> str:
    if value is None:
        raise ValueError(f"{name}{where}: missing")
    if not isinstance(value, str):
        raise TypeError(f"{name}{where}: a string is needed, got {type(value).__name__}")
    try:
        return check_text_field(name, value)
    except QuestionProblem as problem:
        raise ValueError(f"{name}{where}: {problem.problem}") from None
