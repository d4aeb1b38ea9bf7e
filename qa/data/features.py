"""Question/context windows for the model, for a batch (dict of columns) of examples.

A context longer than one window is cut into overlapping windows
(``max_length`` tokens, consecutive windows sharing ``stride`` tokens), each
holding the whole question. Training windows carry the answer's token span, or
the CLS position when the window does not hold the whole answer; evaluation
windows carry the character offsets needed to turn a token span back into text.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Any

from qa.config.settings import WindowSettings
from qa.errors import QAError, first_line
from qa.text import ends_invisibly, starts_invisibly

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def prepare_train_features(
    examples: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, window: WindowSettings
) -> dict[str, list[Any]]:
    """Tokenise a batch of examples into labelled training windows.

    Returns ``input_ids``, ``token_type_ids`` (only when the tokenizer's model
    takes them), ``start_positions`` / ``end_positions`` and ``example_index`` (the
    window's example in ``examples``),
    one row per window in the tokenizer's overflow order. The label is the
    smallest token span covering the first gold answer (its surrounding white
    space left out); windows without the whole answer get the CLS position for
    both. Labels always satisfy start <= end and lie inside the context.
    """
    encoded, context_index = _encode_windows(examples, tokenizer, window)
    cls_token_id = tokenizer.cls_token_id
    start_positions: list[int] = []
    end_positions: list[int] = []
    for row, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
        input_ids = encoded["input_ids"][row]
        # "Not in this window" is labelled at the CLS token wherever the tokenizer puts it (XLNet: last).
        cls_index = cls_position(input_ids, cls_token_id)
        answers = examples["answers"][example_index]
        span = None
        if answers["text"]:
            context = examples["context"][example_index]
            answer_start, answer_end = _strip_span(
                context, answers["answer_start"][0], answers["answer_start"][0] + len(answers["text"][0])
            )
            offsets = context_offsets(context, encoded["offset_mapping"][row], encoded.sequence_ids(row), context_index)
            span = covering_token_span(offsets, answer_start, answer_end)
        start, end = span if span is not None else (cls_index, cls_index)
        start_positions.append(start)
        end_positions.append(end)
    features = _model_inputs(encoded, tokenizer)
    features["start_positions"] = start_positions
    features["end_positions"] = end_positions
    features["example_index"] = list(encoded["overflow_to_sample_mapping"])
    return features


def prepare_eval_features(
    examples: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, window: WindowSettings
) -> dict[str, list[Any]]:
    """Tokenise a batch of examples into evaluation windows.

    Returns the model inputs plus ``example_id`` (the id of the window's
    example) and ``offset_mapping`` (character span of each token in the
    context, ``None`` for every token outside the context).
    """
    encoded, context_index = _encode_windows(examples, tokenizer, window)
    example_ids: list[str] = []
    offset_mapping: list[list[tuple[int, int] | None]] = []
    for row, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
        context = examples["context"][example_index]
        offset_mapping.append(
            context_offsets(context, encoded["offset_mapping"][row], encoded.sequence_ids(row), context_index)
        )
        example_ids.append(examples["id"][example_index])
    features = _model_inputs(encoded, tokenizer)
    features["example_id"] = example_ids
    features["offset_mapping"] = offset_mapping
    return features


def cls_position(input_ids: list[int], cls_token_id: int | None) -> int:
    """Where a window's CLS token is: at its start (BERT and most), or at its end (XLNet). Not the first
    CLS id anywhere: a context holding the text ``<cls>`` tokenises it as that id too."""
    if cls_token_id is None or not input_ids:
        return 0
    if input_ids[0] == cls_token_id:
        return 0
    if input_ids[-1] == cls_token_id:
        return len(input_ids) - 1
    return input_ids.index(cls_token_id) if cls_token_id in input_ids else 0


def context_offsets(
    context: str, offsets: list[tuple[int, int]], sequence_ids: list[int | None], context_index: int
) -> list[tuple[int, int] | None]:
    """Each token's character span in ``context``, exact, or None for a token that is not context text.

    The one place where tokenizers' offsets are made exact, for labels and answers alike. Offsets of
    SentencePiece and byte-level BPE tokenizers (DeBERTa-v2/v3, DeBERTa, ModernBERT, BigBird) include
    the white space before a word, and a lone word-start piece (``▁``, ``Ġ``) may map to a space, to
    nothing, or overlap the first character of the next token (transformers #14418, tokenizers
    #1775). So: white space at either end of a span is left out, and so are the characters that show
    nothing there (zero-width and format characters such as a soft hyphen, a combining mark at the start:
    `qa.text.starts_invisibly`), which a user who highlights or compares an answer would trip on; a token
    left with no text is not
    context (no answer starts or ends on it); a token whose span is a strict prefix of the next
    token's is a word-start marker, and is not context either. Byte pieces of one character keep
    their shared span. WordPiece offsets pass unchanged.
    """
    spans: list[tuple[int, int] | None] = []
    for offset, sequence_id in zip(offsets, sequence_ids):
        if sequence_id != context_index:
            spans.append(None)
            continue
        start, end = offset
        if start < end and (starts_invisibly(context[start]) or ends_invisibly(context[end - 1])):
            while start < end and starts_invisibly(context[start]):
                start += 1
            while end > start and ends_invisibly(context[end - 1]):
                end -= 1
            offset = (start, end)
        if start >= end:
            spans.append(None)
            continue
        before = spans[-1] if spans else None
        if before is not None and before[0] == start and before[1] < end:
            spans[-1] = None  # a word-start marker: known once the next token is
        spans.append(offset)
    return spans


def covering_token_span(
    offsets: list[tuple[int, int] | None], answer_start: int, answer_end: int
) -> tuple[int, int] | None:
    """Smallest token span inside the context covering characters [answer_start, answer_end).

    ``offsets``: each token's exact context span, None outside the context (`context_offsets`). The
    start is the last context token that starts at or before the answer's first character (the first
    of several tokens sharing that start, as byte pieces of one character do); the end is the first
    token that ends at or after the answer's last character (the last of several sharing that end).
    Returns None when the window's context does not hold the whole answer.
    """
    located = [(index, offset) for index, offset in enumerate(offsets) if offset is not None]
    if not located:
        return None
    positions = [index for index, _ in located]
    starts = [offset[0] for _, offset in located]
    ends = [offset[1] for _, offset in located]
    if starts[0] > answer_start or ends[-1] < answer_end:
        return None
    # Exact offsets are non-decreasing along the context, so bisection finds both ends.
    start = bisect_left(starts, starts[bisect_right(starts, answer_start) - 1])
    end = bisect_right(ends, ends[bisect_left(ends, answer_end)]) - 1
    return positions[start], positions[max(start, end)]


def _strip_span(context: str, start: int, end: int) -> tuple[int, int]:
    """Leave out white space around an answer so its span starts and ends on text."""
    while start < end - 1 and context[start].isspace():
        start += 1
    while end > start + 1 and context[end - 1].isspace():
        end -= 1
    return start, end


def _encode_windows(
    examples: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, window: WindowSettings
) -> tuple[Any, int]:
    """Tokenise question/context pairs into overlapping windows; returns the encoding and the context's sequence id."""
    # The context part of a window must stay longer than the stride, so the question cap
    # shrinks for short windows instead of the tokenizer failing on a long question.
    # WindowSettings' rule (stride <= max_length - MAX_SPECIAL_TOKENS - 2) keeps this room >= 1.
    room = window.max_length - tokenizer.num_special_tokens_to_add(pair=True) - window.stride - 1
    question_cap = max(1, min(window.max_question_length, room))
    questions = _cut_long_questions([question.strip() for question in examples["question"]], tokenizer, question_cap)
    contexts = examples["context"]
    # Tokenizers that pad on the left expect the context first (as in the Hugging Face QA recipes).
    question_first = tokenizer.padding_side == "right"
    pair = (questions, contexts) if question_first else (contexts, questions)
    try:
        encoded = tokenizer(
            *pair,
            truncation="only_second" if question_first else "only_first",
            max_length=window.max_length,
            stride=window.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids="token_type_ids" in tokenizer.model_input_names,
            padding=False,
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # the Rust library's PanicException is not an Exception
        why = f"{type(error).__name__}: {first_line(error)}"
        raise QAError(f"the tokenizer failed on these questions ({why})") from None
    return encoded, 1 if question_first else 0


def _cut_long_questions(
    questions: list[str], tokenizer: PreTrainedTokenizerBase, max_question_length: int
) -> list[str]:
    """Cut questions longer than ``max_question_length`` tokens so every window keeps room for context."""
    # A token spans at least one UTF-8 byte for WordPiece and (byte-level) BPE, so only
    # questions with more bytes than the limit can be too long: tokenise just those.
    suspects = [
        index for index, question in enumerate(questions) if len(question.encode("utf-8")) > max_question_length
    ]
    if not suspects:
        return questions
    questions = list(questions)
    # A cut text can tokenise into more tokens than the tokens it was cut at (SentencePiece splits the piece
    # left at the cut anew): cut again, one token shorter each time, until every cut question fits.
    for shorter in range(max_question_length):
        encoded = tokenizer(
            [questions[index] for index in suspects], add_special_tokens=False, return_offsets_mapping=True
        )
        too_long = []
        for row, index in enumerate(suspects):
            offsets = encoded["offset_mapping"][row]
            if len(offsets) > max_question_length:
                keep = max(1, max_question_length - shorter)
                questions[index] = questions[index][: offsets[keep - 1][1]]
                too_long.append(index)
        if not too_long:
            break
        suspects = too_long
    return questions


def _model_inputs(encoded: Any, tokenizer: PreTrainedTokenizerBase) -> dict[str, list[Any]]:
    # No attention mask: windows are stored unpadded and the batcher builds the mask.
    names = ["input_ids"]
    if "token_type_ids" in tokenizer.model_input_names:
        names.append("token_type_ids")
    return {name: encoded[name] for name in names}
