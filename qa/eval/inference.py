"""Batched forward passes over windows, logits kept ragged (one float per real token)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from qa.data.batching import collate_windows, length_sorted_batches
from qa.data.windows import EvalWindows
from qa.runtime.device import Runtime


def predict_logits(
    model: Any,
    windows: EvalWindows,
    runtime: Runtime,
    batch_size: int,
    window_indices: np.ndarray | None = None,
    pad_token_id: int = 0,
    progress: bool = False,
    max_tokens: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits of the windows ``window_indices`` (default: all).

    Windows are sorted by length into batches padded to their own longest, of at most ``batch_size``
    windows and ``max_tokens`` padded tokens.
    Returns two flat float32 arrays laid out like ``windows.input_ids``; tokens
    of windows not computed here hold NaN. ``on_batch(done, total)``: after each batch, the windows
    done so far and in all (a caller's progress).
    """
    starts = windows.starts
    selected = np.arange(len(windows)) if window_indices is None else np.asarray(window_indices, dtype=np.int64)
    start_flat = np.full(len(windows.input_ids), np.nan, dtype=np.float32)
    end_flat = np.full(len(windows.input_ids), np.nan, dtype=np.float32)
    batches = [selected[batch] for batch in length_sorted_batches(windows.lengths[selected], batch_size, max_tokens)]
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="inference", unit="batch", disable=not runtime.is_main)
    model.eval()
    done = 0
    with torch.inference_mode(), runtime.autocast():
        for batch_indices in batches:
            batch = collate_windows(
                windows.input_ids, windows.token_type_ids, starts, windows.lengths, batch_indices, pad_token_id
            )
            outputs = model(**{name: tensor.to(runtime.device, non_blocking=True) for name, tensor in batch.items()})
            start_logits = outputs.start_logits.float().cpu().numpy()
            end_logits = outputs.end_logits.float().cpu().numpy()
            mask = batch["attention_mask"].numpy().astype(bool)
            # Real tokens sit at the left of each padded row, so position p of window w is flat token starts[w] + p.
            targets = (starts[batch_indices][:, None] + np.arange(mask.shape[1])[None, :])[mask]
            start_flat[targets] = start_logits[mask]
            end_flat[targets] = end_logits[mask]
            done += len(batch_indices)
            if on_batch is not None:
                on_batch(done, len(selected))
    return start_flat, end_flat


def shard_windows(num_windows: int, runtime: Runtime) -> np.ndarray:
    """The windows this rank infers: every world_size-th one, no padding, none dropped."""
    return np.arange(runtime.rank, num_windows, runtime.world_size)


def gather_logits(
    start_flat: np.ndarray, end_flat: np.ndarray, runtime: Runtime
) -> tuple[np.ndarray, np.ndarray] | None:
    """Merge every rank's share on rank 0 (None elsewhere); each token's logits come from exactly one rank."""
    if not runtime.distributed:
        return start_flat, end_flat
    computed = ~np.isnan(start_flat)
    share = (np.flatnonzero(computed), start_flat[computed], end_flat[computed])
    shares: list[Any] | None = [None] * runtime.world_size if runtime.is_main else None
    torch.distributed.gather_object(share, shares, dst=0)
    if shares is None:  # not rank 0
        return None
    merged_start = np.full_like(start_flat, np.nan)
    merged_end = np.full_like(end_flat, np.nan)
    seen = np.zeros(len(start_flat), dtype=np.int64)
    for positions, start_values, end_values in shares:
        merged_start[positions] = start_values
        merged_end[positions] = end_values
        seen[positions] += 1
    if not np.all(seen == 1):
        raise RuntimeError(
            f"distributed gather covered {int((seen == 0).sum())} tokens zero times and "
            f"{int((seen > 1).sum())} tokens more than once"
        )
    return merged_start, merged_end
