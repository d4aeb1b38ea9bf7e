"""The setting users run: each question read together with other paragraphs of its article.

For every question, ``k`` other paragraphs of the same article (chosen with a seed per question) join
its own paragraph, in a random order; the answer across all of them (`qa.eval.passages`) is scored
with the official rules, and the share of questions whose answer came from the right paragraph is
reported beside it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa.data.distractors import article_paragraphs, check_titles, lone_questions, pick_distractors, question_rng
from qa.data.questions import Question
from qa.eval.answering import Reader
from qa.eval.evaluator import write_result_files
from qa.eval.metrics import squad_scores, v2_raw_scores
from qa.files import METRICS_FILE, PREDICTIONS_FILE


@dataclass
class DistractorSet:
    question: Question
    gold_passage: int  # the index of the question's own paragraph among its passages


def distractor_sets(examples: Any, k: int, seed: int = 0) -> list[DistractorSet]:
    """One multi-passage question per example: its paragraph and ``k`` others of its article (fewer
    where the article has fewer). Examples without a title are refused (`check_titles`)."""
    titles, contexts = list(examples["title"]), list(examples["context"])
    check_titles(titles, "--distractors")
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


def passage_accuracy(
    sets: list[DistractorSet], answers: list[list[dict[str, Any]]], answerable: list[bool] | None = None
) -> float:
    """Percent of the questions with an answer whose best answer came from their own paragraph
    (``answerable``: which have one; default all). A question without an answer has no right passage:
    its abstention is scored by exact match and F1, not here."""
    answerable = answerable if answerable is not None else [True] * len(sets)
    pairs = [(item, found) for item, found, has in zip(sets, answers, answerable) if has]
    right = sum(found[0].get("passage") == item.gold_passage for item, found in pairs)
    return 100.0 * right / max(len(pairs), 1)


def evaluate_with_distractors(reader: Reader, examples: Any, k: int, output_dir: Path) -> dict[str, Any] | None:
    """evaluate.py --distractors K: every question read with K other paragraphs of its article, scored
    with the official rules; its result files replace the whole set of an earlier evaluation there
    (predictions.json and metrics.json; no n-best list or report, which describe single passages). Returns
    the metrics (None on ranks other than 0 under torchrun)."""
    sets = distractor_sets(examples, k)
    alone = lone_questions(list(examples["title"]), list(examples["context"]))
    if alone:
        print(
            f"note: --distractors: {alone} of {len(sets)} questions have no other paragraph in their article and "
            "are read alone",
            file=sys.stderr,
        )
    answers = reader.answer([item.question for item in sets])
    if not reader.runtime.is_main:
        return None
    ids = [str(example_id) for example_id in examples["id"]]  # one set per example, in order
    predictions = {question_id: found[0]["answer"] for question_id, found in zip(ids, answers)}
    golds = {str(i): list(gold["text"]) for i, gold in zip(examples["id"], examples["answers"])}
    if all(golds.values()):
        scores = squad_scores(predictions, golds)
    else:  # unanswerable questions: the v2.0 rules (an empty answer is right exactly for them)
        exact, f1 = v2_raw_scores(predictions, golds)
        scores = {"exact_match": 100.0 * sum(exact.values()) / len(exact), "f1": 100.0 * sum(f1.values()) / len(f1)}
    answerable = [bool(golds[question_id]) for question_id in ids]
    metrics = {
        **scores,
        "passage_accuracy": passage_accuracy(sets, answers, answerable),
        "passage_accuracy_of": sum(answerable),
        "distractors": k,
        "passages_per_question": sum(len(item.question.passages) for item in sets) / max(len(sets), 1),
        "num_examples": len(sets),
    }
    write_result_files(output_dir, {PREDICTIONS_FILE: predictions, METRICS_FILE: metrics})
    print(
        f"note: --distractors writes {PREDICTIONS_FILE} and {METRICS_FILE} only (no report or n-best list); "
        "those of an earlier evaluation in the directory were removed",
        file=sys.stderr,
    )
    print(
        f"exact_match = {metrics['exact_match']:.2f}  f1 = {metrics['f1']:.2f}  right passage "
        f"{metrics['passage_accuracy']:.1f}% of {sum(answerable)} questions with an answer  ({len(sets)} questions, "
        f"each with up to {k} other paragraphs; results in {output_dir})"
    )
    return metrics
