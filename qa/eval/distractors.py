"""The setting users run: each question read together with other paragraphs of its article.

For every question, ``k`` other paragraphs of the same article (chosen with a seed per question) join
its own paragraph, in a random order; the answer across all of them (`qa.eval.passages`) is scored
with the official rules, and the share of questions whose answer came from the right paragraph is
reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qa.data.distractors import article_paragraphs, pick_distractors, question_rng
from qa.data.questions import Question


@dataclass
class DistractorSet:
    question: Question
    gold_passage: int  # the index of the question's own paragraph among its passages


def distractor_sets(examples: Any, k: int, seed: int = 0) -> list[DistractorSet]:
    """One multi-passage question per example: its paragraph and ``k`` others of its article (fewer
    where the article has fewer)."""
    titles, contexts = list(examples["title"]), list(examples["context"])
    paragraphs = article_paragraphs(titles, contexts)
    sets = []
    for index, (example_id, question, title, context) in enumerate(
        zip(examples["id"], examples["question"], titles, contexts)
    ):
        rng = question_rng(seed, index)
        passages = pick_distractors(paragraphs[title], context, k, rng) + [context]
        rng.shuffle(passages)
        sets.append(DistractorSet(Question(question, "", str(example_id), 1, None, passages), passages.index(context)))
    return sets


def passage_accuracy(sets: list[DistractorSet], answers: list[list[dict[str, Any]]]) -> float:
    """Percent of questions whose best answer came from their own paragraph."""
    right = sum(found[0].get("passage") == item.gold_passage for item, found in zip(sets, answers))
    return 100.0 * right / max(len(sets), 1)
