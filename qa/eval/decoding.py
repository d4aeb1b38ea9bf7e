"""Turn start/end logits over the windows of each example into answer spans.

The rule is the one of the Hugging Face QA recipes, applied to all windows at
once with numpy instead of a Python loop over windows and position pairs: in
each window take the ``n_best`` start and ``n_best`` end positions by logit,
drop pairs with a position outside the context, an end before its start or
more than ``max_answer_length`` tokens, score a pair by start logit + end
logit, and keep the best-scoring pair over all windows of the example.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qa.config.settings import DecodeSettings
from qa.data.windows import NOT_CONTEXT, EvalWindows, pad_ragged

DECODE_CHUNK_WINDOWS = 4096  # bounds the padded [windows, length] arrays the decoder builds


@dataclass
class Candidate:
    """One answer span: text, character offsets [start, end) in the context, and scores."""

    text: str
    start: int
    end: int
    score: float
    probability: float = 1.0  # softmax over the n-best list's scores (what utils_qa reports)
    log_prob: float | None = None  # log-probability of the span among all valid spans of its window


@dataclass
class Prediction:
    """The best span of one example, the no-answer decision, and the n-best list when asked for.

    ``text`` / ``start`` / ``end`` / ``score`` describe the best span even when the
    example is judged unanswerable; `answer` is what to report.
    """

    text: str
    start: int
    end: int
    score: float | None
    null_score: float | None = None  # CLS start + end logit, the minimum over the example's windows
    log_prob: float | None = None  # log-probability of the span among all valid spans of its window
    no_answer: bool = False
    nbest: list[Candidate] = field(default_factory=list)

    @property
    def answer(self) -> str:
        return "" if self.no_answer else self.text


def decide_no_answer(prediction: Prediction, null_threshold: float | None) -> bool:
    """No answer when null score - best span score > threshold; a model without a threshold always answers."""
    if null_threshold is None or prediction.null_score is None:
        return False
    return prediction.score is None or prediction.null_score - prediction.score > null_threshold


def decode_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    window_example: np.ndarray,
    contexts: list[str],
    n_best: int = DecodeSettings.n_best,
    max_answer_length: int = DecodeSettings.max_answer_length,
    with_nbest: bool = False,
    null_positions: np.ndarray | None = None,
    null_threshold: float | None = None,
) -> list[Prediction]:
    """Best answer span of every example, over all of its windows.

    Args:
        start_logits, end_logits: ``[windows, length]``; positions past a
            window's end hold ``-inf``.
        offsets: ``[windows, length, 2]`` character offsets in the context,
            ``NOT_CONTEXT`` for tokens outside the context and for padding.
        window_example: ``[windows]`` index into ``contexts`` of each window's
            example; the windows of an example appear in their order.
        contexts: the context of every example.
        with_nbest: also return each example's ``n_best`` spans with softmax
            probabilities over their scores.
        null_positions: ``[windows]`` position of the CLS token, whose start +
            end logits score "no answer"; None: no null scores.
        null_threshold: with null scores, an example gets no answer when its
            null score - best span score exceeds it; the empty answer then joins
            the n-best list, ranked by null score - threshold. None: always answer.

    An example without any valid span gets the empty text and score None.
    """
    num_windows, length = start_logits.shape
    k = min(n_best, length)
    in_context = offsets[..., 0] != NOT_CONTEXT
    # The n-best positions are searched among the context's tokens only: a question or special token can
    # never start or end an answer, and counting it among the n-best would leave a valid span unseen
    # (transformers' question-answering pipeline searches the context alone too).
    start_top = _top_k_positions(np.where(in_context, start_logits, -np.inf), k)
    end_top = _top_k_positions(np.where(in_context, end_logits, -np.inf), k)
    rows = np.arange(num_windows)[:, None]
    pair_scores = (start_logits[rows, start_top][:, :, None] + end_logits[rows, end_top][:, None, :]).astype(np.float64)
    span_length = end_top[:, None, :] - start_top[:, :, None] + 1
    valid = (
        in_context[rows, start_top][:, :, None]
        & in_context[rows, end_top][:, None, :]
        & (span_length >= 1)
        & (span_length <= max_answer_length)
    )
    pair_scores = np.where(valid, pair_scores, -np.inf).reshape(num_windows, k * k)
    normalizers = context_log_normalizers(
        span_log_normalizers(start_logits, end_logits, in_context, max_answer_length),
        start_logits,
        end_logits,
        null_positions,
        window_example,
        len(contexts),
    )

    # Best pair per window, then best window per example (first among equal scores).
    window_best = pair_scores.argmax(axis=1)
    window_score = pair_scores[np.arange(num_windows), window_best]
    order = np.lexsort((-window_score, window_example))
    examples_with_windows, first = np.unique(window_example[order], return_index=True)
    best_window = np.full(len(contexts), -1, dtype=np.int64)
    best_window[examples_with_windows] = order[first]

    null_scores = _example_null_scores(start_logits, end_logits, null_positions, window_example, len(contexts))
    predictions = []
    for example, window in enumerate(best_window):
        if window < 0 or not np.isfinite(window_score[window]):
            predictions.append(Prediction(text="", start=0, end=0, score=None))
        else:
            start_char, end_char = _char_span(offsets, start_top, end_top, int(window), int(window_best[window]))
            predictions.append(
                Prediction(
                    text=contexts[example][start_char:end_char],
                    start=start_char,
                    end=end_char,
                    score=float(window_score[window]),
                    log_prob=float(window_score[window] - normalizers[window]),
                )
            )
        if null_scores is not None:
            predictions[-1].null_score = float(null_scores[example])
            predictions[-1].no_answer = decide_no_answer(predictions[-1], null_threshold)
    if with_nbest:
        null_for_nbest = None if null_scores is None or null_threshold is None else null_scores - null_threshold
        _attach_nbest(
            predictions,
            pair_scores,
            start_top,
            end_top,
            offsets,
            window_example,
            contexts,
            n_best,
            null_for_nbest,
            normalizers,
        )
    return predictions


def span_log_normalizers(
    start_logits: np.ndarray, end_logits: np.ndarray, in_context: np.ndarray, max_answer_length: int
) -> np.ndarray:
    """Per window, log of the sum of exp(start + end logit) over every valid span (start and end in the
    context, 1 to max_answer_length tokens): a span's score minus this is its exact log-probability
    under the softmax over all valid spans of its window, whatever --n-best is.

    Computed in O(windows x length x max_answer_length) as sum_s exp(a_s) * sum_{e in [s, s+M)} exp(b_e),
    every term non-negative (no cancellation), in float64 and relative to each row's maximum."""
    starts = np.where(in_context, start_logits, -np.inf).astype(np.float64)
    ends = np.where(in_context, end_logits, -np.inf).astype(np.float64)
    start_max = np.max(np.where(np.isfinite(starts), starts, -1e300), axis=1, keepdims=True)
    end_max = np.max(np.where(np.isfinite(ends), ends, -1e300), axis=1, keepdims=True)
    start_exp, end_exp = np.exp(starts - start_max), np.exp(ends - end_max)
    length = ends.shape[1]
    reachable = np.zeros_like(end_exp)  # reachable[w, s] = sum of exp(b_e - max) over the valid ends of start s
    for offset in range(min(max_answer_length, length)):
        reachable[:, : length - offset] += end_exp[:, offset:]
    with np.errstate(divide="ignore"):
        return np.log((start_exp * reachable).sum(axis=1)) + start_max[:, 0] + end_max[:, 0]


def context_log_normalizers(
    window_normalizers: np.ndarray,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    null_positions: np.ndarray | None,
    window_example: np.ndarray,
    num_examples: int,
) -> np.ndarray:
    """Per window, the log-normalizer of its example: every valid span of every window of the context,
    and each window's null span (CLS, "not in this window"). A span's score minus it is its
    log-probability among everything the model could answer for this context, so that (a) one
    context's answers are ranked by their raw score and by their probability alike, whatever window
    each comes from, and (b) a context with a single possible span does not score it 1 whatever the
    model says: the null spans take their share."""
    normalizers = window_normalizers.astype(np.float64)
    if null_positions is not None:
        rows = np.arange(len(null_positions))
        window_null = start_logits[rows, null_positions].astype(np.float64) + end_logits[rows, null_positions]
        normalizers = np.logaddexp(normalizers, window_null)
    per_example = np.full(num_examples, -np.inf)
    np.logaddexp.at(per_example, window_example, normalizers)
    return per_example[window_example]


def _example_null_scores(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    null_positions: np.ndarray | None,
    window_example: np.ndarray,
    num_examples: int,
) -> np.ndarray | None:
    """Each example's null score: CLS start + end logit, the minimum over its windows (as the reference
    implementations do: the window most sure that there is an answer decides)."""
    if null_positions is None:
        return None
    rows = np.arange(len(null_positions))
    window_null = start_logits[rows, null_positions].astype(np.float64) + end_logits[rows, null_positions]
    scores = np.full(num_examples, np.inf)
    np.minimum.at(scores, window_example, window_null)
    return scores


def decode_windows(
    windows: EvalWindows,
    start_flat: np.ndarray,
    end_flat: np.ndarray,
    settings: DecodeSettings,
    with_nbest: bool = False,
) -> list[Prediction]:
    """Decode ragged logits in chunks of whole examples, so padding memory stays bounded."""
    starts = windows.starts
    predictions: list[Prediction] = []
    num_windows = len(windows)
    begin = 0
    while begin < num_windows:
        end = min(begin + DECODE_CHUNK_WINDOWS, num_windows)
        # Extend the chunk so that an example's windows are never split across chunks.
        while end < num_windows and windows.window_example[end] == windows.window_example[end - 1]:
            end += 1
        token_begin = starts[begin]
        token_end = starts[end - 1] + windows.lengths[end - 1]
        lengths = windows.lengths[begin:end]
        first_example = int(windows.window_example[begin])
        last_example = int(windows.window_example[end - 1])
        predictions += decode_spans(
            pad_ragged(start_flat[token_begin:token_end], lengths, -np.inf),
            pad_ragged(end_flat[token_begin:token_end], lengths, -np.inf),
            pad_ragged(windows.offsets[token_begin:token_end], lengths, NOT_CONTEXT),
            windows.window_example[begin:end] - first_example,
            windows.contexts[first_example : last_example + 1],
            n_best=settings.n_best,
            max_answer_length=settings.max_answer_length,
            with_nbest=with_nbest,
            null_positions=windows.null_positions[begin:end],
            null_threshold=settings.null_threshold,
        )
        begin = end
    return predictions


def _char_span(
    offsets: np.ndarray, start_top: np.ndarray, end_top: np.ndarray, window: int, pair: int
) -> tuple[int, int]:
    """Character span [start, end) of candidate ``pair`` (start rank x k + end rank) of a window."""
    k = start_top.shape[1]
    return int(offsets[window, start_top[window, pair // k], 0]), int(offsets[window, end_top[window, pair % k], 1])


def _top_k_positions(logits: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k largest logits per row, largest first (lower position first among equals).

    argpartition finds the k in linear time; only those k are then sorted.
    """
    if k < logits.shape[1]:
        candidates = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    else:
        candidates = np.broadcast_to(np.arange(logits.shape[1]), logits.shape)
    values = np.take_along_axis(logits, candidates, axis=1)
    order = np.lexsort((candidates, -values), axis=1)
    return np.take_along_axis(candidates, order, axis=1)


def _attach_nbest(
    predictions: list[Prediction],
    pair_scores: np.ndarray,
    start_top: np.ndarray,
    end_top: np.ndarray,
    offsets: np.ndarray,
    window_example: np.ndarray,
    contexts: list[str],
    n_best: int,
    null_ranking_scores: np.ndarray | None = None,
    normalizers: np.ndarray | None = None,
) -> None:
    """Each example's best ``n_best`` candidates with softmax probabilities over them; with
    ``null_ranking_scores`` the empty answer is a candidate too (listed last among equals)."""
    k = start_top.shape[1]
    windows_of: dict[int, list[int]] = {}
    for window, example in enumerate(window_example.tolist()):
        windows_of.setdefault(example, []).append(window)
    for example, windows in windows_of.items():
        scores = pair_scores[windows].reshape(-1)
        null_index = len(scores)
        if null_ranking_scores is not None:
            scores = np.append(scores, null_ranking_scores[example])
        # Overlapping windows find the same span more than once: each span is listed once, with its best
        # score (the first met in score order), so the list holds n_best different answers.
        kept: list[tuple[int, float, tuple[int, int]]] = []
        seen: set[tuple[int, int]] = set()
        for flat in np.argsort(-scores, kind="stable").tolist():
            if len(kept) == n_best or not np.isfinite(scores[flat]):
                break
            if flat == null_index:
                span = (-1, -1)  # the empty answer: never a duplicate of a span
            else:
                span = _char_span(offsets, start_top, end_top, windows[flat // (k * k)], flat % (k * k))
            if span in seen:
                continue
            seen.add(span)
            kept.append((flat, float(scores[flat]), span))
        if not kept:
            continue
        top = np.array([score for _, score, _ in kept])
        probabilities = np.exp(top - top.max())
        probabilities /= probabilities.sum()
        candidates = []
        for (flat, score, (start_char, end_char)), probability in zip(kept, probabilities.tolist()):
            if flat == null_index:
                candidates.append(Candidate(text="", start=0, end=0, score=score, probability=probability))
            else:
                text = contexts[example][start_char:end_char]
                window = windows[flat // (k * k)]
                log_prob = None if normalizers is None else score - float(normalizers[window])
                candidates.append(Candidate(text, start_char, end_char, score, probability, log_prob))
        predictions[example].nbest = candidates
