"""The FastAPI app: POST /answer (bounded body and answer time, the batcher behind it), GET /health,
GET / (the page), JSON errors for everything else."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from qa.config.predict import PredictConfig
from qa.errors import QAError
from qa.eval.responses import shape_answers
from qa.serve.api import BadRequest, openapi_parts, parse_questions
from qa.serve.batcher import Answerer, Batcher, ClientGone, Pending

try:  # FastAPI resolves the handlers' annotations from this module's names
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.requests import ClientDisconnect
except ImportError as missing:  # pragma: no cover - requirements.txt installs them
    raise QAError("--serve needs fastapi and uvicorn: pip install -r requirements.txt") from missing

PAGE = Path(__file__).resolve().parent / "page.html"
REQUEST_ID_HEADER = "X-Request-ID"
log = logging.getLogger("qa.serve")


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


def build_app(reader: Answerer, config: PredictConfig) -> FastAPI:
    batcher = Batcher(reader, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="squad-qa", lifespan=lifespan, docs_url=None, redoc_url=None)
    request_body, responses, components = openapi_parts(config)

    if config.access_log:

        @app.middleware("http")
        async def access_log(request: Request, call_next: Any) -> Any:
            """One line per request on stderr (--no-access-log: none): method, path, status, questions, ms."""
            began = time.perf_counter()
            response = await call_next(request)
            questions = getattr(request.state, "questions", 0)
            milliseconds = 1000 * (time.perf_counter() - began)
            print(
                f"{request.method} {request.url.path} {response.status_code} {questions} questions "
                f"{milliseconds:.0f} ms",
                file=sys.stderr,
                flush=True,
            )
            return response

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
            media_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
            if media_type != "application/json" and not media_type.endswith("+json"):
                raise BadRequest(415, f"the body must be JSON (Content-Type: application/json), not {media_type}")
            declared = int(request.headers.get("content-length") or 0)
            if declared > config.max_body_bytes:
                raise BadRequest(413, f"request body over {config.max_body_bytes} bytes")
            try:
                body = await asyncio.wait_for(_read_body(request, config.max_body_bytes), config.read_timeout_s)
            except TimeoutError:
                raise BadRequest(408, f"request body not received within {config.read_timeout_s:g} s") from None
            questions, is_list = parse_questions(body, config)
            request.state.questions = len(questions)
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
        return {**reader.health(), "waiting": batcher.waiting, "dropped": batcher.dropped}

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

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    return app
