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
checked (`qa.data.questions`) before it joins a batch, and a batch that fails anyway is
answered again request by request, so only the request at fault gets the error, a
500 whose request id is in the one line the server logs. Questions of clients that
went away or timed out are dropped before inference. The API's OpenAPI schema is at
``/openapi.json``. FastAPI and uvicorn are imported only in qa/serve.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from qa.config.predict import PredictConfig
from qa.errors import QAError
from qa.eval.answering import load_reader
from qa.serve.app import build_app
from qa.serve.batcher import ServedReader
from qa.serve.header_deadline import header_deadline_protocol

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

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


def serve(config: PredictConfig) -> None:
    """Load the model once and serve until SIGTERM / Ctrl-C, finishing the requests in flight."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.WARNING, stream=sys.stderr)
    sock = bind_socket(config.host, config.port)
    reader = load_reader(
        config.ckpt, config.window, config.decode, config.batch_size, config.precision, config.max_batch_tokens
    )
    app = build_app(ServedReader(reader), config)
    host, port = sock.getsockname()[:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"serving {config.ckpt} on http://{shown_host}:{port} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    make_server(app, config).run(sockets=[sock])


def make_server(app: FastAPI, config: PredictConfig) -> uvicorn.Server:
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
            http=header_deadline_protocol(config.read_timeout_s),
            log_level="warning",
            # Every request ends within its read and answer limits, so a drain ends within their sum.
            timeout_graceful_shutdown=math.ceil(config.read_timeout_s + config.answer_timeout_s) + 5,
            limit_concurrency=config.max_queue + 64,  # connections beyond this get 503 from uvicorn itself
        )
    )
