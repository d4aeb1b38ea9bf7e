"""Which windows go together and how they are padded: the order of training batches
(a pure function of seed and epoch), each rank's share, and padding each batch to
its own longest window."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

PAD_MULTIPLE = 8  # tensor cores and vectorised CPU kernels prefer lengths in multiples of 8
MEGABATCH_FACTOR = 50  # length grouping sorts within chunks of 50 batches, as the HF LengthGroupedSampler
GROUP_KEY = "window_group"  # in a training batch: the question each window belongs to (--distractors)
LABEL_KEYS = ("start_positions", "end_positions", GROUP_KEY)  # what the model is not given


def padded_length(longest: int, multiple: int = PAD_MULTIPLE) -> int:
    return -(-longest // multiple) * multiple


def collate_windows(
    input_ids: np.ndarray,
    token_type_ids: np.ndarray | None,
    starts: np.ndarray,
    lengths: np.ndarray,
    indices: np.ndarray,
    pad_token_id: int,
) -> dict[str, torch.Tensor]:
    """Gather windows ``indices`` from flat token arrays into right-padded tensors.

    The width is the longest selected window rounded up to a multiple of 8,
    not the tokenizer's max_length.
    """
    indices = np.asarray(indices, dtype=np.int64)
    batch_lengths = lengths[indices].astype(np.int64)
    width = padded_length(int(batch_lengths.max()))
    positions = np.arange(width)[None, :]
    mask = positions < batch_lengths[:, None]
    source = starts[indices][:, None] + np.minimum(positions, batch_lengths[:, None] - 1)
    batch = {
        "input_ids": torch.from_numpy(np.where(mask, input_ids[source], pad_token_id).astype(np.int64)),
        "attention_mask": torch.from_numpy(mask.astype(np.int64)),
    }
    if token_type_ids is not None:
        batch["token_type_ids"] = torch.from_numpy(np.where(mask, token_type_ids[source], 0).astype(np.int64))
    return batch


def length_sorted_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Window indices grouped into batches of similar length, longest first (for inference): at most
    ``batch_size`` windows and, where given, at most ``max_tokens`` padded tokens (one window at least)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    if max_tokens is None:
        return [order[begin : begin + batch_size] for begin in range(0, len(order), batch_size)]
    batches, begin = [], 0
    while begin < len(order):
        # The first window of a batch is its longest: it sets the padded width.
        size = min(batch_size, max(1, max_tokens // padded_length(int(lengths[order[begin]]))))
        batches.append(order[begin : begin + size])
        begin += size
    return batches


def token_bounded_parts(lengths: np.ndarray, max_tokens: int) -> list[np.ndarray]:
    """Positions 0..n-1 of a batch split, in order, into parts padded to at most ``max_tokens`` tokens
    each (one window at least): a training micro-batch of long windows run in parts."""
    parts: list[np.ndarray] = []
    current: list[int] = []
    longest = 0
    for position, length in enumerate(np.asarray(lengths)):
        widest = max(longest, int(length))
        if current and padded_length(widest) * (len(current) + 1) > max_tokens:
            parts.append(np.array(current))
            current, widest = [], int(length)
        current.append(position)
        longest = widest
    if current:
        parts.append(np.array(current))
    return parts


def epoch_batches(
    lengths: np.ndarray, global_batch: int, seed: int, epoch: int, group_by_length: bool, drop_last: bool
) -> list[np.ndarray]:
    """Window indices of every global batch of one epoch, a pure function of (seed, epoch).

    Being a function of the epoch alone (no RNG state) is what makes resuming
    mid-epoch exact: the resumed run rebuilds the same list and skips what was done.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    if group_by_length:
        # Similar lengths in a batch mean less padding; sorting only within
        # megabatches keeps the batches random.
        chunk = global_batch * MEGABATCH_FACTOR
        order = np.concatenate(
            [
                part[np.argsort(-lengths[part], kind="stable")]
                for part in np.split(order, range(chunk, len(order), chunk))
            ]
        )
    batches = [order[begin : begin + global_batch] for begin in range(0, len(order), global_batch)]
    if drop_last and batches and len(batches[-1]) < global_batch:
        batches.pop()
    return batches


def group_batches(
    groups: np.ndarray, lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[np.ndarray]:
    """Window indices of every batch of one epoch when windows come in groups that the loss scores
    together (train.py --distractors): whole groups in a random order, a pure function of (seed,
    epoch) as `epoch_batches` is, packed into batches of at most ``batch_size`` windows (a larger
    group is a batch of its own). ``group_by_length``: within chunks of groups, longest window first,
    so that a batch is padded less."""
    by_group = np.argsort(groups, kind="stable")
    _, first = np.unique(groups[by_group], return_index=True)
    members = np.split(by_group, first[1:])
    order = np.random.default_rng([seed, epoch]).permutation(len(members))
    if group_by_length:
        longest = np.maximum.reduceat(np.asarray(lengths)[by_group], first)
        chunk = max(1, batch_size * MEGABATCH_FACTOR // max(1, int(len(groups) / len(members))))
        parts = np.split(order, range(chunk, len(order), chunk))
        order = np.concatenate([part[np.argsort(-longest[part], kind="stable")] for part in parts])
    batches: list[np.ndarray] = []
    current: list[np.ndarray] = []
    size = 0
    for index in order:
        if current and size + len(members[index]) > batch_size:
            batches.append(np.concatenate(current))
            current, size = [], 0
        current.append(members[index])
        size += len(members[index])
    if current:
        batches.append(np.concatenate(current))
    return batches


def training_batches(
    windows: Any, global_batch: int, seed: int, epoch: int, group_by_length: bool, drop_last: bool
) -> list[np.ndarray]:
    """One epoch's batches of training windows: whole groups where the windows have groups, else
    `epoch_batches`."""
    if windows.groups is not None:
        return group_batches(windows.groups, windows.lengths, global_batch, seed, epoch, group_by_length)
    return epoch_batches(windows.lengths, global_batch, seed, epoch, group_by_length, drop_last)


def rank_slice(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's part of a global batch: the global batch is the same whatever the world size."""
    per_rank = len(batch) // world_size
    return batch[rank * per_rank : (rank + 1) * per_rank]


class WindowCollator:
    """Pads a batch of training window indices to its longest window and adds the labels."""

    def __init__(self, windows: Any, pad_token_id: int) -> None:
        self.windows = windows
        self.starts = windows.starts
        self.pad_token_id = pad_token_id

    def __call__(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        windows = self.windows
        batch = collate_windows(
            windows.input_ids, windows.token_type_ids, self.starts, windows.lengths, rows, self.pad_token_id
        )
        batch["start_positions"] = torch.from_numpy(windows.start_positions[rows])
        batch["end_positions"] = torch.from_numpy(windows.end_positions[rows])
        if windows.groups is not None:
            batch[GROUP_KEY] = torch.from_numpy(windows.groups[rows])
        return batch
