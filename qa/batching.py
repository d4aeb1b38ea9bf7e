"""Padding windows into batches: each batch padded to its own longest window."""

from __future__ import annotations

import numpy as np
import torch

PAD_MULTIPLE = 8  # tensor cores and vectorised CPU kernels prefer lengths in multiples of 8


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


def length_sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Window indices grouped into batches of similar length, longest first (for inference)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[begin : begin + batch_size] for begin in range(0, len(order), batch_size)]
