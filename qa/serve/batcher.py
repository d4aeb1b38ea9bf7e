"""Dynamic batching: requests that arrive within ``--batch-wait-ms`` of each other are answered
together, in one inference thread off the event loop, in calls of at most ``--max-batch-questions``
passages. Between calls the work of a request that was given up (its client left, or it timed out)
is dropped, so a long request stops when its time is up. A call that fails is answered again request
by request, so only the request at fault gets the error. Costs are counted in passages."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from qa.config.predict import PredictConfig
from qa.data.questions import Question
from qa.runtime.device import release_freed_memory
from qa.serve.api import BadRequest, request_cost

if TYPE_CHECKING:
    from qa.eval.answering import Reader


class Answerer(Protocol):
    """What the batcher calls in its inference thread: `ServedReader`, or a fake in the tests."""

    def answer(self, questions: list[Question]) -> list[list[dict[str, Any]]]: ...

    def health(self) -> dict[str, Any]: ...


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


@dataclass
class Pending:
    questions: list[Question]
    future: asyncio.Future
    request_id: str


class ServedReader:
    """The `qa.eval.answering.Reader` the server runs: answers lists of questions and counts its work for /health."""

    def __init__(self, reader: Reader) -> None:
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
            release_freed_memory()

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


class Batcher:
    """Collects waiting requests into batches and answers each batch in the inference thread."""

    def __init__(self, reader: Answerer, config: PredictConfig) -> None:
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
        cost = request_cost(questions)
        if self.waiting + cost > self.config.max_queue:
            raise BadRequest(503, f"busy: {self.waiting} passages waiting (limit {self.config.max_queue}); retry")
        self.waiting += cost
        pending = Pending(questions, asyncio.get_running_loop().create_future(), request_id)
        pending.future.add_done_callback(lambda _: self._settled(cost))
        self.queue.put_nowait(pending)
        return pending

    def _settled(self, count: int) -> None:
        self.waiting -= count

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            # A request whose future is already done was given up (client gone, answer time-out).
            live = [pending for pending in batch if not pending.future.done()]
            self.dropped += sum(request_cost(pending.questions) for pending in batch if pending.future.done())
            if live:
                await self._answer(live)

    async def _collect(self) -> list[Pending]:
        """The first waiting request and whatever else arrives within --batch-wait-ms, up to the batch limit."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.config.batch_wait_ms / 1000
        questions = request_cost(batch[0].questions)
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
            questions += request_cost(batch[-1].questions)
        return batch

    async def _answer(self, batch: list[Pending]) -> None:
        """Answer the batch's questions in calls of at most --max-batch-questions passages, dropping
        between calls the questions of requests that were given up meanwhile."""
        found: dict[int, list[Any]] = {id(pending): [] for pending in batch}
        for chunk in _chunks(batch, self.config.max_batch_questions):
            live = [(pending, questions) for pending, questions in chunk if not pending.future.done()]
            self.dropped += sum(request_cost(questions) for pending, questions in chunk if pending.future.done())
            if live:
                await self._answer_chunk(live, found)
        for pending in batch:
            if len(found[id(pending)]) == len(pending.questions):
                _settle(pending, found[id(pending)])

    async def _answer_chunk(self, chunk: list[tuple[Pending, list[Question]]], found: dict[int, list[Any]]) -> None:
        loop = asyncio.get_running_loop()
        everything = [question for _, questions in chunk for question in questions]
        try:
            answers = await loop.run_in_executor(self.executor, self.reader.answer, everything)
        except Exception as error:
            if len(chunk) == 1:
                _settle(chunk[0][0], error=error)
                return
            # One request must not fail the others: answer each on its own, so only the one at fault fails.
            for pending, questions in chunk:
                if pending.future.done():
                    continue
                try:
                    found[id(pending)] += await loop.run_in_executor(self.executor, self.reader.answer, questions)
                except Exception as single_error:
                    _settle(pending, error=single_error)
            return
        begin = 0
        for pending, questions in chunk:
            found[id(pending)] += answers[begin : begin + len(questions)]
            begin += len(questions)


def _chunks(batch: list[Pending], max_passages: int) -> list[list[tuple[Pending, list[Question]]]]:
    """The batch's questions, in order, in chunks of at most ``max_passages`` passages (a question with
    more passages than that is a chunk of its own), each question with its request."""
    chunks: list[list[tuple[Pending, list[Question]]]] = [[]]
    size = 0
    for pending in batch:
        for question in pending.questions:
            cost = len(question.passages)
            if size and size + cost > max_passages:
                chunks.append([])
                size = 0
            if chunks[-1] and chunks[-1][-1][0] is pending:
                chunks[-1][-1][1].append(question)
            else:
                chunks[-1].append((pending, [question]))
            size += cost
    return [chunk for chunk in chunks if chunk]


def _settle(pending: Pending, answers: Any = None, error: Exception | None = None) -> None:
    if pending.future.done():
        return
    if error is not None:
        pending.future.set_exception(error)
    else:
        pending.future.set_result(answers)
