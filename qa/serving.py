"""`predict.py --serve`: the model behind an HTTP API, with dynamic batching and bounded cost.

Requests that arrive within ``--batch-wait-ms`` of each other are answered
together: one call of the same evaluator predict.py uses, whose forward passes
hold up to ``--batch-size`` windows. Inference runs in one worker thread, off the
event loop, so the server keeps accepting (and refusing with 503 once
``--max-queue`` questions wait) while the model works. FastAPI and uvicorn are
imported only here, so predict.py's one-shot path does not pay for them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa.config import PredictConfig
from qa.errors import QAError
from qa.evaluation import AnswerSettings, answer_examples
from qa.modeling import check_model_fits, load_qa_model, load_tokenizer, with_stored_threshold
from qa.predict_cmd import answers_json
from qa.runtime import inference_batch_size, setup_runtime

try:  # FastAPI resolves the handlers' annotations from this module's names
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
except ImportError as missing:  # pragma: no cover - requirements.txt installs them
    raise QAError("--serve needs fastapi and uvicorn: pip install -r requirements.txt") from missing

PAGE = Path(__file__).resolve().parent / "serve_page.html"


class BadRequest(Exception):
    """A request the server refuses: HTTP status, message and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass
class Pending:
    questions: list[dict[str, Any]]
    future: asyncio.Future


class Answerer:
    """Answers lists of questions with the loaded model; counts forward passes for /health and tests."""

    def __init__(self, config: PredictConfig) -> None:
        check_model_fits(config.ckpt, config.window)
        self.config = config
        self.runtime = setup_runtime(config.precision)
        self.model = load_qa_model(config.ckpt, require_qa_head=True).to(self.runtime.device)
        self.tokenizer = load_tokenizer(config.ckpt)
        decode = with_stored_threshold(config.decode, self.model)
        self.settings = AnswerSettings(config.window, decode, inference_batch_size(config.batch_size, self.runtime))
        self.forward_passes = 0
        self.questions_answered = 0
        self.model.register_forward_hook(self._count)

    def _count(self, *args: Any) -> None:
        self.forward_passes += 1

    def answer(self, questions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        try:
            return self._answer(questions)
        finally:
            _release_freed_memory()

    def _answer(self, questions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        columns = {
            "id": [str(index) for index in range(len(questions))],
            "question": [item["question"] for item in questions],
            "context": [item["context"] for item in questions],
        }
        predictions = answer_examples(self.model, self.tokenizer, columns, self.settings, self.runtime, with_nbest=True)
        with_null = self.settings.decode.null_threshold is not None
        self.questions_answered += len(questions)
        return [answers_json(p, item["top_k"], with_null) for p, item in zip(predictions, questions, strict=True)]

    def health(self) -> dict[str, Any]:
        window, decode = self.settings.window, self.settings.decode
        return {
            "status": "ready",
            "checkpoint": str(self.config.ckpt),
            "max_length": window.max_length,
            "stride": window.stride,
            "max_question_length": window.max_question_length,
            "n_best": decode.n_best,
            "max_answer_length": decode.max_answer_length,
            "null_threshold": decode.null_threshold,
            "precision": self.runtime.precision,
            "forward_passes": self.forward_passes,
            "questions_answered": self.questions_answered,
        }


def _release_freed_memory() -> None:
    """Batches of ever-different shapes leave glibc's heap fragmented and the server's memory
    creeping up; handing freed pages back after each batch keeps it flat (glibc only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def parse_questions(body: bytes, config: PredictConfig) -> tuple[list[dict[str, Any]], bool]:
    """The questions of one POST /answer body, and whether it was a list; BadRequest names what is wrong."""
    if len(body) > config.max_body_bytes:
        raise BadRequest(413, f"request body over {config.max_body_bytes} bytes")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(400, f"invalid JSON ({error})") from None
    is_list = isinstance(document, list)
    items = document if is_list else [document]
    if is_list and not items:
        raise BadRequest(422, "empty list of questions")
    if len(items) > config.max_queue:
        raise BadRequest(413, f"{len(items)} questions in one request; at most {config.max_queue}")
    questions = []
    for index, item in enumerate(items):
        where = f"[{index}]." if is_list else ""
        if not isinstance(item, dict):
            raise BadRequest(422, f"{where or 'body'}: expected an object with 'question' and 'context'")
        for name in ("question", "context"):
            value = item.get(name)
            if not isinstance(value, str):
                raise BadRequest(422, f"field '{where}{name}' is missing or not a string", f"{where}{name}")
            if not value.strip():
                raise BadRequest(422, f"field '{where}{name}' is empty", f"{where}{name}")
        if len(item["context"]) > config.max_context_chars:
            raise BadRequest(
                413, f"field '{where}context' is over {config.max_context_chars} characters", f"{where}context"
            )
        top_k = item.get("top_k", 1)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= config.decode.n_best:
            raise BadRequest(
                422, f"field '{where}top_k' must be an integer from 1 to {config.decode.n_best}", f"{where}top_k"
            )
        unknown = sorted(set(item) - {"question", "context", "top_k", "id"})
        if unknown:
            raise BadRequest(422, f"unknown field '{where}{unknown[0]}'", f"{where}{unknown[0]}")
        questions.append({"question": item["question"], "context": item["context"], "top_k": top_k})
    return questions, is_list


class Batcher:
    """Collects waiting requests into batches and answers each batch in the inference thread."""

    def __init__(self, answerer: Answerer, config: PredictConfig) -> None:
        self.answerer = answerer
        self.config = config
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.waiting = 0  # questions queued or being answered
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, questions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        if self.waiting + len(questions) > self.config.max_queue:
            raise BadRequest(503, f"busy: {self.waiting} questions waiting (limit {self.config.max_queue}); retry")
        self.waiting += len(questions)
        pending = Pending(questions, asyncio.get_running_loop().create_future())
        await self.queue.put(pending)
        try:
            return await pending.future
        finally:
            self.waiting -= len(questions)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self.config.batch_wait_ms / 1000
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + wait
            questions = len(batch[0].questions)
            while questions < self.config.max_batch_questions:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
                questions += len(batch[-1].questions)
            everything = [question for pending in batch for question in pending.questions]
            try:
                answers = await loop.run_in_executor(self.executor, self.answerer.answer, everything)
            except Exception as error:  # never wedge: every waiting request gets an answer or an error
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(error)
                continue
            begin = 0
            for pending in batch:
                end = begin + len(pending.questions)
                if not pending.future.done():
                    pending.future.set_result(answers[begin:end])
                begin = end


def build_app(answerer: Answerer, config: PredictConfig) -> Any:
    batcher = Batcher(answerer, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="squad-qa", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    def error(problem: BadRequest) -> JSONResponse:
        body = {"error": problem.message}
        if problem.field:
            body["field"] = problem.field
        headers = {"Retry-After": "1"} if problem.status == 503 else None
        return JSONResponse(body, status_code=problem.status, headers=headers)

    @app.post("/answer")
    async def answer(request: Request) -> Any:
        try:
            declared = int(request.headers.get("content-length") or 0)
            if declared > config.max_body_bytes:
                raise BadRequest(413, f"request body over {config.max_body_bytes} bytes")
            body = await _read_body(request, config.max_body_bytes)
            questions, is_list = parse_questions(body, config)
            answers = await batcher.submit(questions)
        except BadRequest as problem:
            return error(problem)
        except Exception as failure:  # a bug must not reach the client as a traceback
            return JSONResponse({"error": f"internal error: {type(failure).__name__}"}, status_code=500)
        shaped = [found[0] if item["top_k"] == 1 else found for found, item in zip(answers, questions)]
        return JSONResponse(shaped if is_list else shaped[0])

    @app.get("/health")
    async def health() -> Any:
        return {**answerer.health(), "waiting": batcher.waiting}

    @app.get("/")
    async def page() -> Any:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> Any:
        return JSONResponse({"error": f"no such endpoint: {request.method} {request.url.path}"}, status_code=404)

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> Any:
        return JSONResponse({"error": f"method not allowed: {request.method} {request.url.path}"}, status_code=405)

    return app


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, refused as soon as it passes the limit (a missing or lying Content-Length too)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def serve(config: PredictConfig) -> None:
    """Load the model once and serve until SIGTERM / Ctrl-C, finishing the requests in flight."""
    import uvicorn

    _check_port_free(config.host, config.port)
    answerer = Answerer(config)
    app = build_app(answerer, config)
    print(f"serving {config.ckpt} on http://{config.host}:{config.port} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after its graceful shutdown (exit status -15); a server stopped on
        purpose that finished its work exits 0 here."""

        @contextmanager
        def capture_signals(self) -> Any:
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

    server = Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level="warning",
            timeout_graceful_shutdown=60,
            limit_concurrency=config.max_queue + 64,  # connections beyond this get 503 from uvicorn itself
        )
    )
    server.run()


def _check_port_free(host: str, port: int) -> None:
    """uvicorn reports a taken port with a log line and exit status 1; say it our way, before loading."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as problem:
        raise QAError(f"cannot serve on {host}:{port} ({problem.strerror or problem})") from None
