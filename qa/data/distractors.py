"""Other paragraphs of a question's article: the distractors of evaluate.py --distractors and of
train.py --distractors, chosen by one rule (a seed per question, so a run is reproducible)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from qa.errors import QAError

NO_ANSWER: dict[str, list[Any]] = {"text": [], "answer_start": []}


def check_titles(titles: list[str], flag: str) -> None:
    """Distractors come from the question's own article, found by its title: refuse examples without
    one (they would all fall into one article named '', mixing articles)."""
    untitled = sum(not title for title in titles)
    if untitled:
        raise QAError(
            f"{flag} takes other paragraphs of each question's article, found by its title: {untitled} of "
            f"{len(titles)} examples have no title (give each article a 'title')"
        )


def lone_questions(titles: list[str], contexts: list[str]) -> int:
    """How many questions have no other paragraph in their article (they are read alone)."""
    paragraphs = article_paragraphs(titles, contexts)
    return sum(len(paragraphs[title]) == 1 for title in titles)


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
    rows: dict[str, list[Any]] = {
        name: [] for name in ("id", "title", "question", "context", "answers", "passage_number")
    }
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
            rows["passage_number"].append(number)  # 0: the question's own paragraph
            groups.append(index)
    return rows, np.array(groups, dtype=np.int64)


def bounded_group_windows(
    groups: np.ndarray, window_row: np.ndarray, passage_number: np.ndarray, batch_size: int
) -> np.ndarray:
    """The windows to keep so that no question holds more than ``batch_size`` windows (a question's
    windows are one batch, so this bounds what a step holds): all windows of its own paragraph, then
    its distractor paragraphs whole, in order, while they fit. Returns the kept windows' indices."""
    keep = np.zeros(len(groups), dtype=bool)
    order = np.lexsort((np.arange(len(groups)), groups))
    starts = np.flatnonzero(np.r_[True, groups[order][1:] != groups[order][:-1]])
    for begin, end in zip(starts, [*starts[1:], len(order)]):
        members = order[begin:end]
        own = members[passage_number[window_row[members]] == 0]
        keep[own] = True
        room = batch_size - len(own)
        rows = passage_number[window_row[members]]
        for number in sorted(set(rows[rows > 0].tolist())):
            paragraph = members[rows == number]
            if len(paragraph) > room:
                break
            keep[paragraph] = True
            room -= len(paragraph)
    return np.flatnonzero(keep)
