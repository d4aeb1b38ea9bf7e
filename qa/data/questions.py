"""One question to answer, read from the command line, a JSON Lines file or an HTTP body.

The request contract is written once, as the pydantic model `QuestionRequest`: its fields, their
bounds and descriptions. The server's OpenAPI document is made from it (`qa.serve.api`), and
`question_from_json` takes from it the fields it accepts and the bounds it checks. The checks
themselves are ours rather than pydantic's validation because they carry the text rule of
`qa.text` (valid Unicode, a visible character), near-miss field names, and one-line messages that
name the field the way predict.py and the server report them (file and line; 4xx with the field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field

from qa.text import label_problem, text_problem


class QuestionRequest(BaseModel):
    """One question: the JSON object of a --input line and of a POST /answer body."""

    # Exactly one of context and contexts, and neither may be null (the parser refuses both): the
    # schema says so with oneOf, and by typing them without None (their Python default stays None).
    model_config = ConfigDict(extra="forbid", title="Question", json_schema_extra=lambda schema: _one_of(schema))
    question: str = Field(min_length=1, description="the question; must hold a visible character")
    context: str = Field(  # type: ignore[assignment]
        None, min_length=1, description="the passage to answer from; must hold a visible character"
    )
    contexts: list[str] = Field(
        None,  # type: ignore[arg-type]
        min_length=1,
        description="instead of context: several passages; the answers come from any of them, each with its passage",
    )
    id: str | int | None = Field(None, description="your id for the question, returned with its answer")
    top_k: int = Field(1, ge=1, description="how many answers to return (at most --n-best)")
    min_confidence: float | None = Field(
        None, ge=0, le=1, description="answers scored below this come back as no answer, with their score"
    )


def _one_of(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [{"required": ["context"]}, {"required": ["contexts"]}]
    for name in ("context", "contexts"):
        schema["properties"][name].pop("default", None)  # absent, never null


QUESTION_FIELDS = tuple(QuestionRequest.model_fields)


def _bound(field: str, kind: type) -> Any:
    """A bound (``Ge`` or ``Le``) that `QuestionRequest` declares for ``field``."""
    metadata = QuestionRequest.model_fields[field].metadata
    return next(getattr(bound, kind.__name__.lower()) for bound in metadata if isinstance(bound, kind))


MIN_TOP_K = _bound("top_k", Ge)
CONFIDENCE_RANGE = (_bound("min_confidence", Ge), _bound("min_confidence", Le))


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
    max_passages: int | None = None,
    known_fields_only: bool = False,
) -> Question:
    """A `Question` from one JSON object, or `QuestionProblem` naming the first field at fault."""
    if not isinstance(item, dict):
        raise QuestionProblem(None, "expected an object with 'question' and 'context'")
    for also in (("question",), ("context", "contexts")):
        if any(field in item for field in also):
            continue
        near = [key for key in item if isinstance(key, str) and key not in also and key.strip().lower() in also]
        if near:
            wanted = near[0].strip().lower()
            raise QuestionProblem(wanted, f"is missing (found {near[0]!r}: field names are lower case)")
    question = check_text_field("question", item.get("question"))
    context, contexts = _passages(item, max_context_chars, max_passages)
    given_id = item.get("id")
    if given_id is not None:
        if isinstance(given_id, bool) or not isinstance(given_id, str | int):
            raise QuestionProblem("id", f"must be a string or an integer, got {given_id!r}")
        given_id = str(given_id)
        if problem := label_problem(given_id):
            raise QuestionProblem("id", problem)
    top_k = item.get("top_k", default_top_k)
    if isinstance(top_k, float) and top_k.is_integer():
        top_k = int(top_k)  # JSON does not tell 2 from 2.0, and JSON Schema counts both as integers
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not MIN_TOP_K <= top_k <= max_top_k:
        raise QuestionProblem("top_k", f"must be an integer from {MIN_TOP_K} to {max_top_k}")
    min_confidence = item.get("min_confidence", default_min_confidence)
    low, high = CONFIDENCE_RANGE
    if min_confidence is not None and (
        isinstance(min_confidence, bool)
        or not isinstance(min_confidence, int | float)
        or not low <= min_confidence <= high
    ):
        raise QuestionProblem("min_confidence", f"must be a number from {low} to {high}")
    if known_fields_only:
        unknown = sorted(set(item) - set(QUESTION_FIELDS))
        if unknown:
            raise QuestionProblem(unknown[0], f"is not a field of a question ({', '.join(QUESTION_FIELDS)})")
    return Question(question, context, given_id, top_k, min_confidence, contexts)


def _passages(
    item: dict[str, Any], max_context_chars: int | None, max_passages: int | None = None
) -> tuple[str, list[str] | None]:
    """``context``, or ``contexts`` (a non-empty list of passages): exactly one of them; the limit on
    characters applies to the passages together, and each passage is read on its own (one window at
    least), so their number has a limit too."""
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
    if max_passages is not None and len(contexts) > max_passages:
        raise QuestionProblem(
            "contexts", f"holds {len(contexts)} passages; at most {max_passages} (--max-passages)", status=413
        )
    for index, passage in enumerate(contexts):
        if not isinstance(passage, str):
            raise QuestionProblem(f"contexts[{index}]", "must be a string")
        check_text_field(f"contexts[{index}]", passage)
    if max_context_chars is not None and sum(map(len, contexts)) > max_context_chars:
        raise QuestionProblem("contexts", f"are over {max_context_chars} characters together", status=413)
    return "", list(contexts)
