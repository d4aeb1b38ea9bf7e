"""`predict.py --serve`: the model behind an HTTP API, with dynamic batching and bounded cost.

Requests that arrive within ``--batch-wait-ms`` of each other are answered
together: one call of the same evaluator predict.py uses, whose forward passes
hold up to ``--batch-size`` windows. Inference runs in one worker thread, off the
event loop, so the server keeps accepting (and refusing with 503 once
``--max-queue`` questions wait) while the model works.

What one request may cost is bounded: its body (``--max-body-bytes``), each context
(``--max-context-chars``), the time to send headers and then body
(``--read-timeout-s``: 408 or a closed connection), the time to be answered
(``--answer-timeout-s``: 503). One request cannot fail another: every question is
checked (`qa.questions`) before it joins a batch, and a batch that fails anyway is
answered again request by request, so only the request at fault gets the error, a
500 whose request id is in the one line the server logs. Questions of clients that
went away or timed out are dropped before inference. The API's OpenAPI schema is at
``/openapi.json``. FastAPI and uvicorn are imported only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import signal
import socket
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa.answering import load_reader, shape_answers
from qa.config import PredictConfig
from qa.errors import QAError
from qa.questions import Question, QuestionProblem, question_from_json
from qa.text import BOM

try:  # FastAPI resolves the handlers' annotations from this module's names
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.requests import ClientDisconnect
except ImportError as missing:  # pragma: no cover - requirements.txt installs them
    raise QAError("--serve needs fastapi and uvicorn: pip install -r requirements.txt") from missing

PAGE = Path(__file__).resolve().parent / "serve_page.html"
REQUEST_ID_HEADER = "X-Request-ID"
log = logging.getLogger("qa.serving")


class BadRequest(Exception):
    """A request the server refuses: HTTP status, message and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


@dataclass
class Pending:
    questions: list[Question]
    future: asyncio.Future
    request_id: str


class Answerer:
    """Answers lists of questions with a loaded `qa.answering.Reader`; counts its work for /health."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.forward_passes = 0
        self.questions_answered = 0
        reader.model.register_forward_hook(self._count)

    def _count(self, *args: Any) -> None:
        self.forward_passes += 1

    def answer(self, questions: list[Question]) -> list[list[dict[str, Any]]]:
        try:
            answers = self.reader.answer(questions)
            self.questions_answered += len(questions)
            return answers
        finally:
            _release_freed_memory()

    def health(self) -> dict[str, Any]:
        window, decode = self.reader.settings.window, self.reader.settings.decode
        return {
            "status": "ready",
            "checkpoint": str(self.reader.checkpoint),
            "max_length": window.max_length,
            "stride": window.stride,
            "max_question_length": window.max_question_length,
            "n_best": decode.n_best,
            "max_answer_length": decode.max_answer_length,
            "null_threshold": decode.null_threshold,
            "precision": self.reader.runtime.precision,
            "forward_passes": self.forward_passes,
            "questions_answered": self.questions_answered,
        }


def _release_freed_memory() -> None:
    """Batches of ever-different shapes leave glibc's heap fragmented and the server's memory
    creeping up; handing freed pages back after each batch keeps it flat (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def parse_questions(body: bytes, config: PredictConfig) -> tuple[list[Question], bool]:
    """The questions of one POST /answer body, and whether it was a list; BadRequest names what is wrong."""
    if len(body) > config.max_body_bytes:
        raise BadRequest(413, f"request body over {config.max_body_bytes} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRequest(400, f"the body is not UTF-8 text ({error.reason} at byte {error.start})") from None
    try:
        document = json.loads(text.removeprefix(BOM))
    except json.JSONDecodeError as error:
        raise BadRequest(400, f"invalid JSON ({error})") from None
    except RecursionError:
        raise BadRequest(400, "invalid JSON: nested too deeply") from None
    is_list = isinstance(document, list)
    items = document if is_list else [document]
    if is_list and not items:
        raise BadRequest(422, "empty list of questions")
    if len(items) > config.max_queue:
        raise BadRequest(413, f"{len(items)} questions in one request; at most {config.max_queue}")
    questions = []
    for index, item in enumerate(items):
        where = f"[{index}]" if is_list else ""
        try:
            questions.append(
                question_from_json(
                    item,
                    max_top_k=config.decode.n_best,
                    max_context_chars=config.max_context_chars,
                    known_fields_only=True,
                )
            )
        except QuestionProblem as problem:
            if problem.field is None:
                raise BadRequest(problem.status, f"{where or 'body'}: {problem.problem}", where or None) from None
            prefix = f"{where}." if where else ""
            raise BadRequest(problem.status, problem.describe(prefix), prefix + problem.field) from None
    return questions, is_list


class Batcher:
    """Collects waiting requests into batches and answers each batch in the inference thread."""

    def __init__(self, answerer: Any, config: PredictConfig) -> None:
        self.answerer = answerer
        self.config = config
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.waiting = 0  # questions queued or being answered
        self.dropped = 0  # questions whose clients left or timed out before their batch began
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)

    def submit(self, questions: list[Question], request_id: str) -> Pending:
        """Queue a request's questions; its future gets their answers, or the error of answering them."""
        if self.waiting + len(questions) > self.config.max_queue:
            raise BadRequest(503, f"busy: {self.waiting} questions waiting (limit {self.config.max_queue}); retry")
        self.waiting += len(questions)
        pending = Pending(questions, asyncio.get_running_loop().create_future(), request_id)
        pending.future.add_done_callback(lambda _: self._settled(len(questions)))
        self.queue.put_nowait(pending)
        return pending

    def _settled(self, count: int) -> None:
        self.waiting -= count

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            # A request whose future is already done was given up (client gone, answer time-out).
            live = [pending for pending in batch if not pending.future.done()]
            self.dropped += sum(len(pending.questions) for pending in batch if pending.future.done())
            if live:
                await self._answer(live)

    async def _collect(self) -> list[Pending]:
        """The first waiting request and whatever else arrives within --batch-wait-ms, up to the batch limit."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.config.batch_wait_ms / 1000
        questions = len(batch[0].questions)
        while questions < self.config.max_batch_questions:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            getter = asyncio.ensure_future(self.queue.get())
            # asyncio.wait reports a time-out by what is done, not by an exception.
            done, _ = await asyncio.wait({getter}, timeout=remaining)
            if not done:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    batch.append(await getter)  # one that completed just before the cancel still counts
                break
            batch.append(getter.result())
            questions += len(batch[-1].questions)
        return batch

    async def _answer(self, batch: list[Pending]) -> None:
        loop = asyncio.get_running_loop()
        everything = [question for pending in batch for question in pending.questions]
        try:
            answers = await loop.run_in_executor(self.executor, self.answerer.answer, everything)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0], error=error)
                return
            # One request must not fail the others: answer each on its own, so only the one at fault fails.
            for pending in batch:
                if pending.future.done():
                    continue
                try:
                    _settle(pending, await loop.run_in_executor(self.executor, self.answerer.answer, pending.questions))
                except Exception as single_error:
                    _settle(pending, error=single_error)
            return
        begin = 0
        for pending in batch:
            end = begin + len(pending.questions)
            _settle(pending, answers[begin:end])
            begin = end


def _settle(pending: Pending, answers: Any = None, error: Exception | None = None) -> None:
    if pending.future.done():
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        pending.future.set_result(answers)


async def _client_gone(request: Request) -> None:
    """Returns when the client closes its connection (the body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _wait_for_answers(pending: Pending, request: Request, timeout: float) -> list[list[dict[str, Any]]]:
    watcher = asyncio.ensure_future(_client_gone(request))
    try:
        done, _ = await asyncio.wait({pending.future, watcher}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if pending.future.done():
        return pending.future.result()
    pending.future.cancel()  # dropped before inference if its batch has not begun
    if watcher in done:
        raise ClientGone
    raise BadRequest(503, f"not answered within {timeout:g} s (--answer-timeout-s); retry later")


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it passes the limit (a missing or lying Content-Length too)."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, f"request body over {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)


# ---------------------------------------------------------------- the API and its schema


class ApiQuestion(BaseModel):
    """One question (the schema of POST /answer; the server's own checks in `qa.questions` are the authority)."""

    model_config = ConfigDict(extra="forbid", title="Question")
    question: str = Field(min_length=1, description="the question; must hold a visible character")
    context: str = Field(min_length=1, description="the passage to answer from; must hold a visible character")
    top_k: int = Field(1, ge=1, description="how many answers to return (at most --n-best)")
    id: str | int | None = Field(None, description="your id for the question, returned with its answer")


class ApiAnswer(BaseModel):
    model_config = ConfigDict(title="Answer")
    answer: str = Field(description="the answer text; empty when the model says the context does not answer")
    score: float = Field(description="probability among the n-best candidates")
    start: int = Field(description="character offset (code points) of the answer in the context")
    end: int = Field(description="character offset (code points) just past the answer")
    no_answer: bool | None = Field(None, description="only for a model with a null threshold (SQuAD v2)")
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
    422: "a field is missing, of the wrong type, empty, not valid Unicode or unknown",
    500: "internal error, logged with the request id",
    503: "busy (Retry-After) or not answered within --answer-timeout-s",
}


def _openapi_parts(config: PredictConfig) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The request body, the responses and the component schemas of POST /answer, with this server's limits."""
    refs = "#/components/schemas/{model}"
    question = ApiQuestion.model_json_schema(ref_template=refs)
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


def build_app(answerer: Any, config: PredictConfig) -> Any:
    batcher = Batcher(answerer, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="squad-qa", lifespan=lifespan, docs_url=None, redoc_url=None)
    request_body, responses, components = _openapi_parts(config)

    def error(problem: BadRequest, request_id: str | None = None) -> JSONResponse:
        body = {"error": problem.message}
        if problem.field:
            body["field"] = problem.field
        headers = {"Retry-After": "1"} if problem.status == 503 else {}
        if problem.status in (408, 413):
            headers["Connection"] = "close"  # the rest of an unread body must not be taken for the next request
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        return JSONResponse(body, status_code=problem.status, headers=headers)

    @app.post(
        "/answer",
        openapi_extra={"requestBody": request_body, "responses": responses},
        summary="Answer one question, or a list of them, from its context",
    )
    async def answer(request: Request) -> Any:
        request_id = uuid.uuid4().hex[:16]
        try:
            declared = int(request.headers.get("content-length") or 0)
            if declared > config.max_body_bytes:
                raise BadRequest(413, f"request body over {config.max_body_bytes} bytes")
            try:
                body = await asyncio.wait_for(_read_body(request, config.max_body_bytes), config.read_timeout_s)
            except TimeoutError:
                raise BadRequest(408, f"request body not received within {config.read_timeout_s:g} s") from None
            questions, is_list = parse_questions(body, config)
            pending = batcher.submit(questions, request_id)
            answers = await _wait_for_answers(pending, request, config.answer_timeout_s)
        except BadRequest as problem:
            return error(problem, request_id)
        except ClientGone:
            return None  # nobody to answer; uvicorn closes the connection
        except asyncio.CancelledError:
            # Only a shutdown that outlasts its grace period cancels a request: one line, not a traceback.
            log.warning("request %s: dropped at shutdown before it was answered", request_id)
            return error(BadRequest(503, "the server is shutting down; retry"), request_id)
        except Exception as failure:  # ours, not the client's: log it once, tell the client how to find it
            log.error("request %s: internal error: %s: %s", request_id, type(failure).__name__, failure)
            return JSONResponse(
                {
                    "error": f"internal error ({type(failure).__name__}); request id {request_id}",
                    "request_id": request_id,
                },
                status_code=500,
                headers={REQUEST_ID_HEADER: request_id},
            )
        shaped = [shape_answers(found, question) for found, question in zip(answers, questions, strict=True)]
        return JSONResponse(shaped if is_list else shaped[0], headers={REQUEST_ID_HEADER: request_id})

    @app.get("/health")
    async def health() -> Any:
        return {**answerer.health(), "waiting": batcher.waiting, "dropped": batcher.dropped}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> Any:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Any) -> Any:
        return JSONResponse({"error": f"no such endpoint: {request.method} {request.url.path}"}, status_code=404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Any) -> Any:
        # Starlette puts the allowed methods in the exception's Allow header; RFC 9110 wants it on a 405.
        return JSONResponse(
            {"error": f"method not allowed: {request.method} {request.url.path}"},
            status_code=405,
            headers=getattr(exc, "headers", None),
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title="squad-qa", version="1", routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


# ---------------------------------------------------------------- the process


def bind_socket(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a taken port is one line, and port 0 gets a real port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as problem:
        sock.close()
        raise QAError(f"cannot serve on {host}:{port} ({problem.strerror or problem})") from None
    return sock


def header_timeout_protocol(read_timeout_s: float) -> type:
    """uvicorn's HTTP/1.1 protocol with a deadline for request headers, which uvicorn does not have:
    a client that connects, or sends part of its headers, and stalls would otherwise hold its
    connection, and delay a shutdown, without end. Idle keep-alive connections stay uvicorn's."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutProtocol(H11Protocol):
        header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._watch_headers(started=True)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch_headers(started=True)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch_headers(started=False)

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _awaiting_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _watch_headers(self, started: bool) -> None:
            """Arm the deadline when a request has begun (connection or first bytes) but its headers are incomplete."""
            if not self._awaiting_headers():
                self._stop_timer()
            elif started and self.header_timer is None and not self.transport.is_closing():
                self.header_timer = self.loop.call_later(read_timeout_s, self._headers_too_slow)

        def _stop_timer(self) -> None:
            if self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None

        def _headers_too_slow(self) -> None:
            self.header_timer = None
            if self._awaiting_headers() and not self.transport.is_closing():
                client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
                log.warning("closed the connection of %s: no complete request within %g s", client, read_timeout_s)
                self.transport.close()

    return HeaderTimeoutProtocol


def serve(config: PredictConfig) -> None:
    """Load the model once and serve until SIGTERM / Ctrl-C, finishing the requests in flight."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.WARNING, stream=sys.stderr)
    sock = bind_socket(config.host, config.port)
    reader = load_reader(config.ckpt, config.window, config.decode, config.batch_size, config.precision)
    app = build_app(Answerer(reader), config)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"serving {config.ckpt} on http://{shown_host}:{port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    make_server(app, config).run(sockets=[sock])


def make_server(app: Any, config: PredictConfig) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its graceful shutdown (exit status -15); a server stopped on
        purpose that finished its work exits 0 here."""

        @contextmanager
        def capture_signals(self) -> Any:
            if threading.current_thread() is not threading.main_thread():
                yield  # a server run in a thread (tests) is stopped through should_exit
                return
            previous = {signum: signal.signal(signum, self._stop) for signum in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

        def _stop(self, signum: int, frame: Any) -> None:
            if self.should_exit and signum == signal.SIGINT:
                self.force_exit = True  # a second Ctrl-C stops without waiting
            self.should_exit = True

    return Server(
        uvicorn.Config(
            app,
            http=header_timeout_protocol(config.read_timeout_s),
            log_level="warning",
            # Every request ends within its read and answer limits, so a drain ends within their sum.
            timeout_graceful_shutdown=config.read_timeout_s + config.answer_timeout_s + 5,
            limit_concurrency=config.max_queue + 64,  # connections beyond this get 503 from uvicorn itself
        )
    )
