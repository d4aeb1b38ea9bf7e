"""One question to answer, read from the command line, a JSON Lines file or an HTTP body.

predict.py and the server check a question the same way (the text rule of `qa.text`, the
id, the number of answers asked for) and differ only in how they report a problem:
predict.py names the file and line, the server answers 4xx naming the JSON field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qa.text import label_problem, text_problem

QUESTION_FIELDS = ("question", "context", "contexts", "id", "top_k", "min_confidence")


@dataclass
class Question:
    question: str
    context: str
    id: str | None = None  # the asker's own id, echoed back with the answer
    top_k: int = 1
    min_confidence: float | None = None  # answers scored below it come back as "no answer"
    contexts: list[str] | None = None  # several passages to answer from, instead of one context

    @property
    def passages(self) -> list[str]:
        return self.contexts if self.contexts is not None else [self.context]


class QuestionProblem(Exception):
    """What is wrong with a question: the field, the problem and the HTTP status that fits it."""

    def __init__(self, field: str | None, problem: str, status: int = 422) -> None:
        super().__init__(problem)
        self.field, self.problem, self.status = field, problem, status

    def describe(self, prefix: str = "") -> str:
        if self.field is None:
            return self.problem
        return f"field '{prefix}{self.field}' {self.problem}"


def check_text_field(name: str, value: Any, *, from_command_line: bool = False) -> str:
    if value is None:
        raise QuestionProblem(name, "is missing")
    problem = text_problem(value, from_command_line=from_command_line)
    if problem:
        raise QuestionProblem(name, problem)
    return value


def question_from_json(
    item: Any,
    *,
    max_top_k: int,
    default_top_k: int = 1,
    default_min_confidence: float | None = None,
    max_context_chars: int | None = None,
    known_fields_only: bool = False,
) -> Question:
    """A `Question` from one JSON object, or `QuestionProblem` naming the first field at fault."""
    if not isinstance(item, dict):
        raise QuestionProblem(None, "expected an object with 'question' and 'context'")
    for name in ("question", "context"):
        near = [key for key in item if isinstance(key, str) and key != name and key.strip().lower() == name]
        if name not in item and near:
            raise QuestionProblem(name, f"is missing (found {near[0]!r}: field names are lower case)")
    question = check_text_field("question", item.get("question"))
    context, contexts = _passages(item, max_context_chars)
    given_id = item.get("id")
    if given_id is not None:
        if isinstance(given_id, bool) or not isinstance(given_id, str | int):
            raise QuestionProblem("id", f"must be a string or an integer, got {given_id!r}")
        given_id = str(given_id)
        if label_problem(given_id):
            raise QuestionProblem("id", label_problem(given_id))
    top_k = item.get("top_k", default_top_k)
    if isinstance(top_k, float) and top_k.is_integer():
        top_k = int(top_k)  # JSON does not tell 2 from 2.0, and JSON Schema counts both as integers
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= max_top_k:
        raise QuestionProblem("top_k", f"must be an integer from 1 to {max_top_k}")
    min_confidence = item.get("min_confidence", default_min_confidence)
    if min_confidence is not None and (
        isinstance(min_confidence, bool) or not isinstance(min_confidence, int | float) or not 0 <= min_confidence <= 1
    ):
        raise QuestionProblem("min_confidence", "must be a number from 0 to 1")
    if known_fields_only:
        unknown = sorted(set(item) - set(QUESTION_FIELDS))
        if unknown:
            raise QuestionProblem(unknown[0], f"is not a field of a question ({', '.join(QUESTION_FIELDS)})")
    return Question(question, context, given_id, top_k, min_confidence, contexts)


def _passages(item: dict[str, Any], max_context_chars: int | None) -> tuple[str, list[str] | None]:
    """``context``, or ``contexts`` (a non-empty list of passages): exactly one of them; the limit on
    characters applies to the passages together."""
    if "contexts" not in item:
        context = check_text_field("context", item.get("context"))
        if max_context_chars is not None and len(context) > max_context_chars:
            raise QuestionProblem("context", f"is over {max_context_chars} characters", status=413)
        return context, None
    if "context" in item:
        raise QuestionProblem("contexts", "cannot be given together with 'context' (one or the other)")
    contexts = item["contexts"]
    if not isinstance(contexts, list) or not contexts:
        raise QuestionProblem("contexts", "must be a non-empty list of passages")
    for index, passage in enumerate(contexts):
        if not isinstance(passage, str):
            raise QuestionProblem(f"contexts[{index}]", "must be a string")
        check_text_field(f"contexts[{index}]", passage)
    if max_context_chars is not None and sum(map(len, contexts)) > max_context_chars:
        raise QuestionProblem("contexts", f"are over {max_context_chars} characters together", status=413)
    return "", list(contexts)
