"""Dynamic batching: requests that arrive within ``--batch-wait-ms`` of each other are answered
together by one call of the evaluator, in one inference thread off the event loop. A batch that
fails is answered again request by request, so only the request at fault gets the error."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from qa.config.predict import PredictConfig
from qa.data.questions import Question
from qa.serve.api import BadRequest


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


@dataclass
class Pending:
    questions: list[Question]
    future: asyncio.Future
    request_id: str


class ServedReader:
    """The `qa.eval.answering.Reader` the server runs: answers lists of questions and counts its work for /health."""

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
            "calibrated": self.reader.settings.calibrator is not None,
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


class Batcher:
    """Collects waiting requests into batches and answers each batch in the inference thread."""

    def __init__(self, reader: Any, config: PredictConfig) -> None:
        self.reader = reader
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
            answers = await loop.run_in_executor(self.executor, self.reader.answer, everything)
        except Exception as error:
            if len(batch) == 1:
                _settle(batch[0], error=error)
                return
            # One request must not fail the others: answer each on its own, so only the one at fault fails.
            for pending in batch:
                if pending.future.done():
                    continue
                try:
                    _settle(pending, await loop.run_in_executor(self.executor, self.reader.answer, pending.questions))
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
