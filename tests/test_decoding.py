import numpy as np
import pytest

from qa.data.windows import NOT_CONTEXT, pad_ragged
from qa.eval.decoding import decode_spans


def plain_loop(windows, contexts, n_best, max_answer_length):
    """The Hugging Face recipe's per-window loop, kept here as the oracle, with its n-best positions taken
    among the context's tokens (as transformers' question-answering pipeline searches the context alone)."""
    candidates = {example: [] for example in range(len(contexts))}
    for example, start_logits, end_logits, offsets in windows:
        outside = np.array([offset is None for offset in offsets])
        start_indexes = np.argsort(np.where(outside, -np.inf, start_logits), kind="stable")[-1 : -n_best - 1 : -1]
        end_indexes = np.argsort(np.where(outside, -np.inf, end_logits), kind="stable")[-1 : -n_best - 1 : -1]
        start_indexes, end_indexes = start_indexes.tolist(), end_indexes.tolist()
        for start in start_indexes:
            for end in end_indexes:
                if offsets[start] is None or offsets[end] is None:
                    continue
                if end < start or end - start + 1 > max_answer_length:
                    continue
                start_char, end_char = offsets[start][0], offsets[end][1]
                candidates[example].append(
                    (float(start_logits[start] + end_logits[end]), contexts[example][start_char:end_char], start_char)
                )
    best = {}
    for example, found in candidates.items():
        found.sort(key=lambda candidate: candidate[0], reverse=True)
        best[example] = found[:n_best]
    return best


def random_windows(rng, num_examples):
    contexts, windows = [], []
    for example in range(num_examples):
        contexts.append("".join(rng.choice(list("abcdefgh ")) for _ in range(400)))
        for _ in range(rng.integers(1, 4)):
            length = int(rng.integers(12, 60))
            question = int(rng.integers(2, 6))
            offsets = [None] * (question + 1)
            position = int(rng.integers(0, 200))
            for _ in range(length - question - 2):
                width = int(rng.integers(1, 4))
                offsets.append((position, position + width))
                position += width + 1
            offsets.append(None)
            windows.append(
                (
                    example,
                    rng.normal(size=length).astype(np.float32),
                    rng.normal(size=length).astype(np.float32),
                    offsets,
                )
            )
    return contexts, windows


def vectorised(windows, contexts, n_best, max_answer_length, with_nbest=False):
    lengths = np.array([len(w[1]) for w in windows])
    flat_offsets = np.array(
        [offset if offset is not None else (NOT_CONTEXT, NOT_CONTEXT) for w in windows for offset in w[3]]
    )
    return decode_spans(
        pad_ragged(np.concatenate([w[1] for w in windows]), lengths, -np.inf),
        pad_ragged(np.concatenate([w[2] for w in windows]), lengths, -np.inf),
        pad_ragged(flat_offsets, lengths, NOT_CONTEXT),
        np.array([w[0] for w in windows]),
        contexts,
        n_best=n_best,
        max_answer_length=max_answer_length,
        with_nbest=with_nbest,
    )


@pytest.mark.parametrize(("n_best", "max_answer_length"), [(20, 30), (5, 4), (3, 1)])
def test_matches_the_plain_per_window_loop(n_best, max_answer_length):
    rng = np.random.default_rng(n_best)
    contexts, windows = random_windows(rng, 60)
    expected = plain_loop(windows, contexts, n_best, max_answer_length)
    predictions = vectorised(windows, contexts, n_best, max_answer_length, with_nbest=True)
    for example, prediction in enumerate(predictions):
        reference = expected[example]
        if not reference:
            assert prediction.text == "" and prediction.score is None
            continue
        assert prediction.text == reference[0][1]
        assert prediction.start == reference[0][2]
        assert prediction.score == pytest.approx(reference[0][0], abs=1e-5)
        assert [c.text for c in prediction.nbest] == [r[1] for r in reference]
        assert [c.score for c in prediction.nbest] == pytest.approx([r[0] for r in reference], abs=1e-5)
        assert sum(c.probability for c in prediction.nbest) == pytest.approx(1.0)
        assert prediction.nbest[0].probability == max(c.probability for c in prediction.nbest)


def test_answer_in_the_second_window_wins_across_windows():
    context = "zero one two three four five six seven"
    offsets = [None, (0, 4), (5, 8), (9, 12), None]
    second = [None, (9, 12), (13, 18), (19, 23), None]
    low = np.array([0, 1, 0, 0, 0], dtype=np.float32)
    high = np.array([0, 0, 5, 0, 0], dtype=np.float32)
    windows = [(0, low, low, offsets), (0, high, high + np.array([0, 0, 0, 6, 0]), second)]
    [prediction] = vectorised(windows, [context], 20, 30)
    assert (prediction.text, prediction.start, prediction.end) == ("three four", 13, 23)


def test_positions_outside_the_context_are_never_chosen():
    context = "alpha beta"
    offsets = [None, None, (0, 5), (6, 10), None]
    logits = np.array([100, 100, 1, 0, 100], dtype=np.float32)
    [prediction] = vectorised([(0, logits, logits, offsets)], [context], 20, 30)
    assert prediction.text == "alpha"


def test_no_valid_span_gives_empty_answer():
    offsets = [None, (0, 5), None]
    start = np.array([0, 0, 0], dtype=np.float32)
    [prediction] = vectorised([(0, start, start, offsets)], ["alpha"], 20, 0)
    assert prediction.text == "" and prediction.score is None


def test_a_span_found_in_two_overlapping_windows_is_listed_once_with_its_best_score():
    context = "zero one two three four five six seven"
    first = [None, (0, 4), (5, 8), (9, 12), (13, 18), None]
    second = [None, (9, 12), (13, 18), (19, 23), (24, 28), None]  # "two three" is in both windows
    start_first = np.array([0, 0, 0, 4, 0, 0], dtype=np.float32)
    end_first = np.array([0, 0, 0, 0, 4, 0], dtype=np.float32)
    start_second = np.array([0, 5, 0, 1, 0, 0], dtype=np.float32)
    end_second = np.array([0, 0, 5, 0, 1, 0], dtype=np.float32)
    windows = [(0, start_first, end_first, first), (0, start_second, end_second, second)]
    [prediction] = vectorised(windows, [context], 15, 30, with_nbest=True)
    spans = [(candidate.start, candidate.end) for candidate in prediction.nbest]
    assert len(spans) == len(set(spans)) == 15
    assert spans[0] == (9, 18) and prediction.nbest[0].score == pytest.approx(10.0)  # the second window's score
    assert prediction.text == "two three"


def test_the_span_log_normalizer_equals_a_brute_force_sum_over_valid_spans():
    from qa.eval.decoding import span_log_normalizers

    rng = np.random.default_rng(3)
    start, end = rng.normal(scale=4, size=(5, 12)), rng.normal(scale=4, size=(5, 12))
    in_context = rng.random((5, 12)) > 0.3
    for max_answer_length in (1, 3, 30):
        expected = []
        for w in range(5):
            terms = [
                start[w, s] + end[w, e]
                for s in range(12)
                for e in range(s, min(s + max_answer_length, 12))
                if in_context[w, s] and in_context[w, e]
            ]
            expected.append(np.logaddexp.reduce(terms))
        got = span_log_normalizers(start, end, in_context, max_answer_length)
        assert got == pytest.approx(expected, rel=1e-12)


def test_the_span_log_probability_does_not_depend_on_n_best():
    contexts, windows = random_windows(np.random.default_rng(5), 20)
    by_n_best = {n: vectorised(windows, contexts, n, 30, with_nbest=True) for n in (5, 20)}
    for small, large in zip(by_n_best[5], by_n_best[20]):
        if small.score is None:
            continue
        assert small.log_prob < 0 and small.log_prob == pytest.approx(large.log_prob, abs=1e-9)
        assert small.nbest[0].log_prob == pytest.approx(large.nbest[0].log_prob, abs=1e-9)
        assert small.nbest[0].probability != pytest.approx(large.nbest[0].probability)  # the n-best softmax does
