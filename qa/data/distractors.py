"""Other paragraphs of a question's article: the distractors of evaluate.py --distractors and of
train.py --distractors, chosen by one rule (a seed per question, so a run is reproducible)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

NO_ANSWER = {"text": [], "answer_start": []}


def article_paragraphs(titles: list[str], contexts: list[str]) -> dict[str, list[str]]:
    """Each article's distinct paragraphs, in the order they first appear."""
    paragraphs: dict[str, list[str]] = {}
    for title, context in zip(titles, contexts):
        if context not in paragraphs.setdefault(title, []):
            paragraphs[title].append(context)
    return paragraphs


def question_rng(seed: int, index: int) -> random.Random:
    return random.Random(seed * 1_000_003 + index)


def pick_distractors(paragraphs: list[str], context: str, k: int, rng: random.Random) -> list[str]:
    """``k`` paragraphs of the article other than ``context`` (fewer where it has fewer)."""
    others = [p for p in paragraphs if p != context]
    return rng.sample(others, min(k, len(others)))


def with_distractor_rows(columns: dict[str, list[Any]], k: int, seed: int) -> tuple[dict[str, list[Any]], np.ndarray]:
    """Training rows: every question with its own paragraph (and its answers) and then with ``k`` other
    paragraphs of its article (no answer there); and the question each row belongs to, the group that
    a shared normalisation scores together."""
    paragraphs = article_paragraphs(columns["title"], columns["context"])
    rows: dict[str, list[Any]] = {name: [] for name in ("id", "title", "question", "context", "answers")}
    groups: list[int] = []
    for index, (example_id, title, question, context, answers) in enumerate(
        zip(columns["id"], columns["title"], columns["question"], columns["context"], columns["answers"])
    ):
        passages = [(context, answers)] + [
            (other, NO_ANSWER) for other in pick_distractors(paragraphs[title], context, k, question_rng(seed, index))
        ]
        for number, (passage, gold) in enumerate(passages):
            rows["id"].append(str(example_id) if number == 0 else f"{example_id}-distractor-{number}")
            rows["title"].append(title)
            rows["question"].append(question)
            rows["context"].append(passage)
            rows["answers"].append(gold)
            groups.append(index)
    return rows, np.array(groups, dtype=np.int64)
