"""Windows of a whole split, stored ragged: memory follows real tokens, not max_length.

`build_train_windows` and `build_eval_windows` run the feature functions of
`qa.data.features` over the examples in chunks of 1,000 and keep the
results as flat numpy arrays plus per-window lengths. Training windows are
cached on disk, keyed by the examples, the tokenizer and the window settings,
so a second run does not tokenise again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qa.config.settings import WindowSettings
from qa.data.features import prepare_eval_features, prepare_train_features
from qa.files import atomic_output

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHUNK_EXAMPLES = 1000
NOT_CONTEXT = -1  # offset value marking a token outside the context (or padding)
# Bump when the feature code changes what it produces, so old caches are not reused.
FEATURES_VERSION = 3  # 2: windows record their example; 3: exact offsets (space-including tokenizers)


def default_cache_dir() -> Path:
    return Path(os.environ.get("QA_CACHE_DIR", Path.home() / ".cache" / "qa-squad"))


class _RaggedWindows:
    """What both kinds of windows share: ``lengths`` and where each window starts in the flat arrays."""

    lengths: np.ndarray

    @cached_property
    def starts(self) -> np.ndarray:
        return window_starts(self.lengths)

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class TrainWindows(_RaggedWindows):
    """Labelled training windows; window ``w`` is ``input_ids[starts[w]:starts[w] + lengths[w]]``."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    lengths: np.ndarray
    start_positions: np.ndarray
    end_positions: np.ndarray
    window_example: np.ndarray  # the example (row of the training columns) each window comes from
    # train.py --distractors: the question each window belongs to (its shared normalisation); None: none
    groups: np.ndarray | None = None

    def subset(self, kept: np.ndarray) -> TrainWindows:
        """Only the windows ``kept`` (indices, in order)."""
        kept = np.asarray(kept, dtype=np.int64)
        tokens = np.concatenate([np.arange(self.starts[w], self.starts[w] + self.lengths[w]) for w in kept])
        tokens = tokens.astype(np.int64) if len(kept) else np.zeros(0, dtype=np.int64)
        return replace(
            self,
            input_ids=self.input_ids[tokens],
            token_type_ids=None if self.token_type_ids is None else self.token_type_ids[tokens],
            lengths=self.lengths[kept],
            start_positions=self.start_positions[kept],
            end_positions=self.end_positions[kept],
            window_example=self.window_example[kept],
            groups=None if self.groups is None else self.groups[kept],
        )


@dataclass
class EvalWindows(_RaggedWindows):
    """Evaluation windows with the offsets and example mapping the decoder needs."""

    input_ids: np.ndarray
    token_type_ids: np.ndarray | None
    lengths: np.ndarray
    offsets: np.ndarray  # [tokens, 2], NOT_CONTEXT outside the context
    window_example: np.ndarray  # index into example_ids / contexts
    null_positions: np.ndarray  # [windows] position of the CLS token, whose logits score "no answer"
    example_ids: list[str]
    contexts: list[str]


@dataclass
class WindowLayout:
    """How the contexts of a split were cut into windows (what the evaluation report slices by)."""

    context_tokens: np.ndarray  # [examples] distinct context tokens of each context
    window_spans: list[list[tuple[int, int]]]  # per example: the character range each of its windows covers
    # [examples] the context tokens one window holds for this question: --max-length less its question
    # and special tokens (a property of the settings and the question, not of how long the data's contexts are)
    capacity: np.ndarray


def window_layout(windows: EvalWindows, max_length: int) -> WindowLayout:
    in_context = windows.offsets[:, 0] != NOT_CONTEXT
    window_of_token = np.repeat(np.arange(len(windows)), windows.lengths)
    example_of_token = windows.window_example[window_of_token]
    num_examples = len(windows.contexts)
    pairs = np.unique(np.stack([example_of_token[in_context], windows.offsets[in_context, 0]]), axis=1)
    context_tokens = np.bincount(pairs[0], minlength=num_examples)
    per_window = np.bincount(window_of_token[in_context], minlength=len(windows))
    spans: list[list[tuple[int, int]]] = [[] for _ in range(num_examples)]
    for window in range(len(windows)):
        begin, end = windows.starts[window], windows.starts[window] + windows.lengths[window]
        offsets = windows.offsets[begin:end][in_context[begin:end]]
        if len(offsets):
            spans[windows.window_example[window]].append((int(offsets[:, 0].min()), int(offsets[:, 1].max())))
    first_window = np.full(num_examples, max(len(windows) - 1, 0), dtype=np.int64)
    np.minimum.at(first_window, windows.window_example, np.arange(len(windows)))
    room = max_length - (windows.lengths - per_window)  # window length less its question and special tokens
    capacity = room[first_window] if len(windows) else np.zeros(num_examples, dtype=np.int64)
    return WindowLayout(context_tokens, spans, capacity.astype(np.int64))


def window_starts(lengths: np.ndarray) -> np.ndarray:
    """Where each window begins in the flat token arrays of windows of these lengths."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def pad_ragged(flat: np.ndarray, lengths: np.ndarray, fill: float | int) -> np.ndarray:
    """Lay rows of different lengths (concatenated in ``flat``) into one padded array."""
    lengths = np.asarray(lengths, dtype=np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    padded = np.full((len(lengths), width, *flat.shape[1:]), fill, dtype=flat.dtype)
    mask = np.arange(width)[None, :] < lengths[:, None]
    padded[mask] = flat
    return padded


def _flat(rows: list[list[int]], dtype: type) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype)


def _chunks(columns: dict[str, list[Any]]) -> Any:
    total = len(columns["context"])
    for begin in range(0, total, CHUNK_EXAMPLES):
        yield {name: values[begin : begin + CHUNK_EXAMPLES] for name, values in columns.items()}


def build_train_windows(
    examples: Any,
    tokenizer: PreTrainedTokenizerBase,
    window: WindowSettings,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> TrainWindows:
    """Tokenise ``examples`` into labelled windows, reusing a disk cache when one matches."""
    # Plain lists, read once: the cache key and the tokeniser both walk them, and each read of a
    # datasets column converts the whole column again.
    columns = {name: list(examples[name]) for name in ("id", "question", "context", "answers")}
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"train-windows-{_cache_key(columns, tokenizer, window)}.npz"
        cached = _load_cache(cache_file)
        if cached is not None:
            return cached
    parts: dict[str, list[np.ndarray]] = {field.name: [] for field in fields(TrainWindows) if field.name != "groups"}
    first_example = 0
    for chunk in _progress(_chunks(columns), len(columns["id"]), progress, "tokenising train"):
        features = prepare_train_features(chunk, tokenizer, window)
        parts["window_example"].append(first_example + np.array(features["example_index"], dtype=np.int64))
        first_example += len(chunk["id"])
        parts["input_ids"].append(_flat(features["input_ids"], np.int32))
        if "token_type_ids" in features:
            parts["token_type_ids"].append(_flat(features["token_type_ids"], np.int8))
        parts["lengths"].append(np.array([len(ids) for ids in features["input_ids"]], dtype=np.int32))
        parts["start_positions"].append(np.array(features["start_positions"], dtype=np.int64))
        parts["end_positions"].append(np.array(features["end_positions"], dtype=np.int64))
    arrays = {name: np.concatenate(chunks) for name, chunks in parts.items() if chunks}
    token_types = arrays.get("token_type_ids")  # absent when the model takes no token types
    windows = TrainWindows(
        **{name: array for name, array in arrays.items() if name != "token_type_ids"}, token_type_ids=token_types
    )
    if cache_file is not None:
        _atomic_savez(cache_file, arrays)
    return windows


def build_eval_windows(
    examples: Any, tokenizer: PreTrainedTokenizerBase, window: WindowSettings, progress: bool = False
) -> EvalWindows:
    """Tokenise ``examples`` (needs ``id``, ``question``, ``context``) into evaluation windows."""
    columns = {name: list(examples[name]) for name in ("id", "question", "context")}
    index_of = {example_id: index for index, example_id in enumerate(columns["id"])}
    input_ids, token_types, lengths, offsets, window_example = [], [], [], [], []
    for chunk in _progress(_chunks(columns), len(columns["id"]), progress, "tokenising eval"):
        features = prepare_eval_features(chunk, tokenizer, window)
        input_ids.append(_flat(features["input_ids"], np.int32))
        if "token_type_ids" in features:
            token_types.append(_flat(features["token_type_ids"], np.int8))
        lengths.append(np.array([len(ids) for ids in features["input_ids"]], dtype=np.int32))
        none = (NOT_CONTEXT, NOT_CONTEXT)
        flat_offsets = [offset if offset is not None else none for row in features["offset_mapping"] for offset in row]
        offsets.append(np.array(flat_offsets, dtype=np.int32).reshape(-1, 2))
        window_example.append(np.array([index_of[example_id] for example_id in features["example_id"]], dtype=np.int64))
    flat_ids = np.concatenate(input_ids)
    all_lengths = np.concatenate(lengths)
    return EvalWindows(
        input_ids=flat_ids,
        token_type_ids=np.concatenate(token_types) if token_types else None,
        lengths=all_lengths,
        offsets=np.concatenate(offsets),
        window_example=np.concatenate(window_example),
        null_positions=_cls_positions(flat_ids, all_lengths, tokenizer.cls_token_id),
        example_ids=columns["id"],
        contexts=columns["context"],
    )


def _cls_positions(flat_ids: np.ndarray, lengths: np.ndarray, token_id: int | None) -> np.ndarray:
    """Each window's CLS position, at its start or at its end (`qa.data.features.cls_position`; not the
    first CLS id anywhere: a context holding the text ``<cls>`` tokenises it as that id too)."""
    positions = np.zeros(len(lengths), dtype=np.int64)
    if token_id is None or not len(lengths):
        return positions
    starts = window_starts(lengths)
    at_end = (flat_ids[starts] != token_id) & (flat_ids[starts + lengths - 1] == token_id)
    positions[at_end] = lengths[at_end] - 1
    return positions


def _progress(chunks: Any, total_examples: int, enabled: bool, description: str) -> Any:
    if not enabled:
        return chunks
    from tqdm import tqdm

    return tqdm(chunks, total=-(-total_examples // CHUNK_EXAMPLES), desc=description, unit="chunk")


def _load_cache(cache_file: Path) -> TrainWindows | None:
    """The cached windows, or None when there is no cache or it does not load (a truncated
    file from a killed run is a miss, not an error: it is rebuilt and replaced)."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file) as stored:
            arrays = {name: stored[name] for name in stored.files}
        arrays.setdefault("token_type_ids", None)
        windows = TrainWindows(**arrays)
        if (
            int(windows.lengths.sum()) != len(windows.input_ids)
            or len(windows.start_positions) != len(windows)
            or len(windows.window_example) != len(windows)
        ):
            raise ValueError("inconsistent arrays")
        return windows
    except Exception as error:  # zipfile, pickle and numpy raise many types for damaged files
        print(
            f"warning: {cache_file}: unreadable feature cache ({type(error).__name__}); rebuilding it", file=sys.stderr
        )
        return None


def _cache_key(columns: dict[str, list[Any]], tokenizer: PreTrainedTokenizerBase, window: WindowSettings) -> str:
    digest = hashlib.sha256()
    settings = {
        "version": FEATURES_VERSION,
        **asdict(window),
        "tokenizer_class": type(tokenizer).__name__,
        "padding_side": tokenizer.padding_side,
        "model_input_names": list(tokenizer.model_input_names),
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    digest.update((backend.to_str() if backend is not None else repr(tokenizer.get_vocab())).encode())
    for name in ("id", "question", "context"):
        for value in columns[name]:
            digest.update(value.encode())
            digest.update(b"\0")
    for answer in columns["answers"]:
        digest.update(repr((answer["text"][:1], answer["answer_start"][:1])).encode())
    return digest.hexdigest()[:24]


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temporary, temporary.open("wb") as handle:
        # A file object: np.savez would add .npz to a path. (Its stubs type **arrays as if one could
        # be named allow_pickle.)
        np.savez(handle, **arrays)  # type: ignore[arg-type]
