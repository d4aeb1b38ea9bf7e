"""The contract of POST /answer: parsing a body into questions (the checks of `qa.data.questions`,
reported as 4xx with the field at fault), and the OpenAPI document made from the request model
(`qa.data.questions.QuestionRequest`, the one the parser takes its fields and bounds from) and
the pydantic models of answers and errors, with this server's limits."""

from __future__ import annotations

import json
from typing import Any

from qa.config.predict import PredictConfig
from qa.data.questions import Question, QuestionProblem, QuestionRequest, question_from_json
from qa.errors import QAError
from qa.text import BOM, DuplicateKey, loads_record

try:
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as missing:  # pragma: no cover - requirements.txt installs them
    raise QAError("--serve needs fastapi and uvicorn: pip install -r requirements.txt") from missing


class BadRequest(Exception):
    """A request the server refuses: HTTP status, message and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def parse_questions(body: bytes, config: PredictConfig) -> tuple[list[Question], bool]:
    """The questions of one POST /answer body, and whether it was a list; BadRequest names what is wrong."""
    if len(body) > config.max_body_bytes:
        raise BadRequest(413, f"request body over {config.max_body_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(400, f"the body is not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        document = loads_record(text.removeprefix(BOM))
    except DuplicateKey as error:
        raise BadRequest(400, f"invalid JSON: {error}") from None
    except json.JSONDecodeError as error:
        raise BadRequest(400, f"invalid JSON ({error})") from None
    except RecursionError:
        raise BadRequest(400, "invalid JSON: nested too deeply") from None
    is_list = isinstance(document, list)
    items = document if is_list else [document]
    if is_list and not items:
        raise BadRequest(422, "empty list of questions")
    if len(items) > config.max_queue:
        raise BadRequest(413, f"{len(items)} questions in one request; at most {config.max_queue} (--max-queue)")
    questions = []
    for index, item in enumerate(items):
        where = f"[{index}]" if is_list else ""
        try:
            questions.append(
                question_from_json(
                    item,
                    max_top_k=config.decode.n_best,
                    max_context_chars=config.max_context_chars,
                    max_passages=config.max_passages,
                    known_fields_only=True,
                )
            )
        except QuestionProblem as problem:
            if problem.field is None:
                raise BadRequest(problem.status, f"{where or 'body'}: {problem.problem}", where or None) from None
            prefix = f"{where}." if where else ""
            raise BadRequest(problem.status, problem.describe(prefix), prefix + problem.field) from None
    passages = request_cost(questions)
    if passages > config.max_queue:
        raise BadRequest(413, f"{passages} passages in one request; at most {config.max_queue} (--max-queue)")
    return questions, is_list


def request_cost(questions: list[Question]) -> int:
    """What a request costs the inference thread, in passages: each is read as a context of its own."""
    return sum(len(question.passages) for question in questions)


# ---------------------------------------------------------------- the API and its schema


class ApiAnswer(BaseModel):
    model_config = ConfigDict(title="Answer")
    answer: str = Field(description="the answer text; empty when the model says the context does not answer")
    score: float = Field(
        description="confidence: with a calibrated model the probability that the answer is exactly right; "
        "for no answer, the probability that abstaining is right"
    )
    start: int = Field(description="character offset (code points) of the answer in the context")
    end: int = Field(description="character offset (code points) just past the answer")
    passage: int | None = Field(None, description="with contexts: the index of the answer's passage")
    no_answer: bool | None = Field(
        None, description="for a model with a null threshold (SQuAD v2), or when min_confidence was given"
    )
    withheld: bool | None = Field(
        None,
        description="true when there is an answer but its score is below min_confidence (no_answer is true too): "
        "told apart from the model's own abstention",
    )
    id: str | None = Field(None, description="the question's id, when it had one")


class ApiAnswersWithId(BaseModel):
    model_config = ConfigDict(title="AnswersWithId")
    id: str
    answers: list[ApiAnswer]


class ApiError(BaseModel):
    model_config = ConfigDict(title="Error")
    error: str
    field: str | None = Field(None, description="the JSON field at fault, e.g. '[1].question'")
    request_id: str | None = Field(None, description="names the server's log line of an internal error")


ERROR_STATUSES = {
    400: "not JSON, or not UTF-8",
    405: "method not allowed (see the Allow header)",
    408: "headers or body not sent within --read-timeout-s",
    413: "body, context or number of questions over the limit",
    415: "a Content-Type other than application/json",
    422: "a field is missing, of the wrong type, empty, not valid Unicode or unknown",
    500: "internal error, logged with the request id",
    503: "busy (Retry-After) or not answered within --answer-timeout-s",
}


def openapi_parts(config: PredictConfig) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The request body, the responses and the component schemas of POST /answer, with this server's limits."""
    refs = "#/components/schemas/{model}"
    question = QuestionRequest.model_json_schema(ref_template=refs)
    question["properties"]["context"]["maxLength"] = config.max_context_chars
    question["properties"]["top_k"]["maximum"] = config.decode.n_best
    one_result = {
        "anyOf": [
            {"$ref": refs.format(model="Answer")},
            {"type": "array", "items": {"$ref": refs.format(model="Answer")}},
            {"$ref": refs.format(model="AnswersWithId")},
        ]
    }
    components = {"Question": question}
    for model in (ApiAnswer, ApiAnswersWithId, ApiError):
        schema = model.model_json_schema(ref_template=refs)
        components.update(schema.pop("$defs", {}))
        components[schema["title"]] = schema
    request_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": refs.format(model="Question")},
                        {
                            "type": "array",
                            "items": {"$ref": refs.format(model="Question")},
                            "minItems": 1,
                            "maxItems": config.max_queue,
                        },
                    ]
                }
            }
        },
    }
    error = {"application/json": {"schema": {"$ref": refs.format(model="Error")}}}
    responses = {
        "200": {
            "description": "the answers: one result per question, a list for a list of questions",
            "content": {
                "application/json": {"schema": {"anyOf": [one_result, {"type": "array", "items": one_result}]}}
            },
        },
        **{str(status): {"description": text, "content": error} for status, text in ERROR_STATUSES.items()},
    }
    return request_body, responses, components
