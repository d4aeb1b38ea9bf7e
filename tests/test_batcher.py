"""The server's batcher without a clock: requests queued before its loop runs meet in one batch, a
failing batch is answered again request by request, and costs count passages."""

from __future__ import annotations

import asyncio

import pytest

from qa.config.predict import PredictConfig
from qa.data.questions import Question
from qa.serve.batcher import Batcher


class Reader:
    """Answers each question with its own text; a batch holding "boom?" fails."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def answer(self, questions):
        self.calls.append([question.question for question in questions])
        if any(question.question == "boom?" for question in questions):
            raise ValueError("the model broke")
        return [[{"answer": question.question.upper()}] for question in questions]


def _answer_all(texts: list[str], **settings) -> tuple[Reader, list]:
    async def scenario():
        reader = Reader()
        config = PredictConfig(serve=True, batch_wait_ms=50.0, **settings)
        batcher = Batcher(reader, config)
        # Queued before the batcher's loop first runs: whatever the clock, they are all waiting.
        pending = [batcher.submit([Question(text, "ctx")], f"r{i}") for i, text in enumerate(texts)]
        batcher.start()
        try:
            results = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
        finally:
            await batcher.stop()
        return reader, results

    return asyncio.run(scenario())


def test_requests_waiting_together_are_answered_in_one_forward_call():
    reader, results = _answer_all([f"who {i}?" for i in range(6)])
    assert reader.calls == [[f"who {i}?" for i in range(6)]]
    assert results == [[[{"answer": f"WHO {i}?"}]] for i in range(6)]


def test_a_failing_batch_is_answered_again_request_by_request_and_only_the_culprit_fails():
    reader, results = _answer_all(["one?", "boom?", "two?"])
    assert reader.calls == [["one?", "boom?", "two?"], ["one?"], ["boom?"], ["two?"]]
    assert results[0] == [[{"answer": "ONE?"}]] and results[2] == [[{"answer": "TWO?"}]]
    assert isinstance(results[1], ValueError)


@pytest.mark.parametrize("limit", [2, 4])
def test_a_batch_holds_at_most_max_batch_questions_passages(limit):
    reader, _ = _answer_all([f"q{i}?" for i in range(5)], max_batch_questions=limit)
    assert all(len(call) <= limit for call in reader.calls) and sum(map(len, reader.calls)) == 5
