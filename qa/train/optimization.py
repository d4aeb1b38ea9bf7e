"""The optimizer side of a run: AdamW with weight decay on matrices only, the linear schedule, the
GradScaler for fp16, and how many optimizer steps a run takes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from qa.config.train import TrainConfig
from qa.data.batching import training_batches
from qa.data.windows import TrainWindows
from qa.errors import QAError
from qa.runtime.device import Runtime


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: biases and norm weights (all 1-D) are not decayed."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step: linear warmup, then linear decay to 0."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps  # the first step already trains, at lr / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return multiplier


def count_steps(
    num_windows: int, global_batch: int, grad_accum: int, epochs: float, max_steps: int | None, drop_last: bool
) -> int:
    """Optimizer steps of a run: ``max_steps`` when given, else ``epochs`` passes of ceil(batches / grad_accum)
    steps each (an epoch's last step takes the micro-batches that are left). Under torchrun a last batch
    too small to split across the ranks is dropped."""
    batches = num_windows // global_batch if drop_last else math.ceil(num_windows / global_batch)
    if batches == 0:
        raise QAError(f"{num_windows} training windows do not fill one batch of {global_batch}")
    return max_steps or math.ceil(epochs * math.ceil(batches / grad_accum))


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    total_steps: int


def setup_optimization(
    config: TrainConfig, runtime: Runtime, model: torch.nn.Module, windows: TrainWindows
) -> Optimization:
    """AdamW, the linear schedule over all steps, and a GradScaler for fp16 only.

    AdamW runs its fused kernel on CUDA and on CPU too: on CPU it is several times faster than the
    default foreach kernel (bench/optimizer_step.py, figures in bench/README.md)."""
    fused = runtime.device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, fused=fused)
    global_batch = config.batch_size * runtime.world_size
    # Batches of whole questions (--distractors) vary in size: count the first epoch's, as windows
    # that fill exactly that many full batches.
    grouped = windows.groups is not None
    total_steps = count_steps(
        len(training_batches(windows, global_batch, config.seed, 0, config.group_by_length, False)) * global_batch
        if grouped
        else len(windows),
        global_batch,
        config.grad_accum,
        config.epochs,
        config.max_steps,
        drop_last=runtime.distributed,
    )
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, warmup_steps))
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")
    return Optimization(optimizer, scheduler, scaler, total_steps)
