"""Answers widened to whole words, as transformers 4's question-answering pipeline gave them
(``align_to_words``, its default): a span that starts or ends inside a word (a WordPiece ``##`` piece,
a digit of a number) takes the whole word, and the candidates that become the same text (compared
without case) are one answer whose probability is the sum of theirs, listed where that sum ranks it.

The words are the tokenizer's own (its pre-tokenizer: white space and punctuation for BERT), read off
the context tokenized alone: the same words the pair encoding of transformers' ``word_to_chars`` sees.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from qa.eval.decoding import Candidate, Prediction

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def word_spans(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[tuple[int, int]]]:
    """The character span [start, end) of each word of each text, in order: one tokenizer call for the
    distinct texts (a list of questions often shares its contexts)."""
    distinct = list(dict.fromkeys(texts))
    encoding = tokenizer(distinct, add_special_tokens=False, return_offsets_mapping=True)
    found: dict[str, list[tuple[int, int]]] = {}
    for row, text in enumerate(distinct):
        spans: dict[int, list[int]] = {}
        for word, (start, end) in zip(encoding.word_ids(row), encoding["offset_mapping"][row]):
            if word is None or end <= start:
                continue
            span = spans.setdefault(word, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
        found[text] = sorted((start, end) for start, end in spans.values())
    return [found[text] for text in texts]


def widen(words: list[tuple[int, int]], start: int, end: int, text: str) -> tuple[int, int]:
    """[start, end) widened to the words holding its first and last characters, without edge white space."""
    starts = [word_start for word_start, _ in words]
    first = bisect_right(starts, start) - 1
    if first >= 0 and words[first][0] <= start < words[first][1]:
        start = words[first][0]
    last = bisect_right(starts, end - 1) - 1
    if last >= 0 and words[last][0] < end <= words[last][1]:
        end = words[last][1]
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def aligned_to_words(prediction: Prediction, words: list[tuple[int, int]], context: str) -> Prediction:
    """``prediction`` with its n-best spans widened to words and merged by text (`qa.eval.words`); its
    "no answer" candidate keeps its place in the list, and its best span and decision are unchanged."""
    merged: dict[str, Candidate] = {}
    for candidate in prediction.nbest:
        if candidate.log_prob is None:
            continue
        start, end = widen(words, candidate.start, candidate.end, context)
        key = context[start:end].lower()
        found = merged.get(key)
        if found is None:
            merged[key] = Candidate(
                context[start:end], start, end, candidate.score, candidate.probability, candidate.log_prob
            )
        else:
            found.score = float(np.logaddexp(found.score, candidate.score))
            found.probability += candidate.probability
            found.log_prob = float(np.logaddexp(found.log_prob or -np.inf, candidate.log_prob))
    spans = sorted(merged.values(), key=lambda candidate: -candidate.score)
    nulls = [(index, candidate) for index, candidate in enumerate(prediction.nbest) if candidate.log_prob is None]
    for index, candidate in nulls:
        spans.insert(min(index, len(spans)), candidate)
    return replace(prediction, nbest=spans)
