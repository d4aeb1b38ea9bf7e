"""The training recipe: setup helpers, then one loop a reader sees on one screen.

Components (batches, optimizer, schedule) are plain functions so tests can
call them; `train` wires them together: data -> model -> optimizer -> loop ->
checkpoints -> final model -> evaluation.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qa.batching import collate_windows
from qa.checkpoint import (
    list_checkpoints,
    load_training_state,
    prune_checkpoints,
    resolve_resume,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    save_final_model,
)
from qa.config import TrainConfig
from qa.errors import QAError
from qa.runtime import Runtime, barrier, setup_runtime, shutdown
from qa.windows import TrainWindows, build_train_windows, default_cache_dir

MEGABATCH_FACTOR = 50  # length grouping sorts within chunks of 50 batches, as the HF LengthGroupedSampler


# ---------------------------------------------------------------- components


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


def rank_slice(batch: np.ndarray, runtime: Runtime) -> np.ndarray:
    """This rank's part of a global batch: the global batch is the same whatever the world size."""
    per_rank = len(batch) // runtime.world_size
    return batch[runtime.rank * per_rank : (runtime.rank + 1) * per_rank]


class WindowCollator:
    """Pads a batch of window indices to its longest window (multiple of 8) and adds the labels."""

    def __init__(self, windows: TrainWindows, pad_token_id: int) -> None:
        self.windows = windows
        self.starts = windows.starts
        self.pad_token_id = pad_token_id

    def __call__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices, dtype=np.int64)
        batch = collate_windows(
            self.windows.input_ids,
            self.windows.token_type_ids,
            self.starts,
            self.windows.lengths,
            indices,
            self.pad_token_id,
        )
        batch["start_positions"] = torch.from_numpy(self.windows.start_positions[indices])
        batch["end_positions"] = torch.from_numpy(self.windows.end_positions[indices])
        return batch


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: not on biases, LayerNorm weights or embeddings' norms."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        is_norm = "layernorm" in name.lower() or "layer_norm" in name.lower() or "norm." in name.lower()
        (no_decay if parameter.ndim < 2 or is_norm else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(total_steps: int, warmup_steps: int) -> Any:
    """Multiplier of the peak learning rate at each step: linear warmup, then linear decay to 0."""

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps  # the first step already trains, at lr / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return multiplier


def span_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the start and end positions, over real tokens only.

    The models' built-in loss also spreads probability over padding positions,
    which would make the loss depend on how a batch happens to be padded (and so
    on the number of devices); masking padding makes it depend on the data alone.
    """
    inputs = {name: tensor for name, tensor in batch.items() if not name.endswith("_positions")}
    outputs = model(**inputs)
    padding = batch["attention_mask"] == 0
    losses = [
        torch.nn.functional.cross_entropy(logits.float().masked_fill(padding, -1e4), batch[name])
        for logits, name in ((outputs.start_logits, "start_positions"), (outputs.end_logits, "end_positions"))
    ]
    return (losses[0] + losses[1]) / 2


@dataclass
class Progress:
    """Where the run is: saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches of this epoch already consumed


# ---------------------------------------------------------------- the recipe


def train(config: TrainConfig) -> dict[str, Any]:
    config.check()
    runtime = setup_runtime(config.precision)
    try:
        return _train(config, runtime)
    finally:
        shutdown(runtime)


@dataclass
class _Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    total_steps: int


def _setup_data(config: TrainConfig, runtime: Runtime, tokenizer: Any) -> tuple[Any, TrainWindows]:
    """Examples and their windows; rank 0 tokenises (or reads the cache) first, the others then read the cache."""
    from qa.data import load_examples

    examples = load_examples(
        config.dataset, "train", config.train_file, for_training=True, max_samples=config.max_train_samples
    )
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    windows = None
    for turn in ("main", "others"):
        if (turn == "main") == runtime.is_main:
            windows = build_train_windows(
                examples,
                tokenizer,
                config.max_length,
                config.stride,
                config.max_question_length,
                cache_dir=cache_dir,
                progress=config.progress and runtime.is_main,
            )
        barrier(runtime)
    assert windows is not None
    return examples, windows


def _setup_optimization(
    config: TrainConfig, runtime: Runtime, model: torch.nn.Module, windows: TrainWindows
) -> _Optimization:
    """AdamW (fused kernels on CUDA), the linear schedule over all steps, and a GradScaler for fp16 only."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay), lr=config.lr, fused=runtime.device.type == "cuda"
    )
    global_batch = config.batch_size * runtime.world_size
    batches_per_epoch = len(epoch_batches(windows.lengths, global_batch, config.seed, 0, False, runtime.distributed))
    if batches_per_epoch == 0:
        raise QAError(f"{len(windows)} training windows do not fill one batch of {global_batch}")
    total_steps = config.max_steps or math.ceil(config.epochs * math.ceil(batches_per_epoch / config.grad_accum))
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, warmup_steps))
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")
    return _Optimization(optimizer, scheduler, scaler, total_steps)


def _optimizer_step(
    model: Any,
    raw_model: torch.nn.Module,
    micro_batches: Any,
    count: int,
    opt: _Optimization,
    runtime: Runtime,
    max_grad_norm: float,
) -> torch.Tensor:
    """Accumulate ``count`` micro-batches, clip, step; returns the step's loss (on device, no sync)."""
    loss_sum = torch.zeros((), device=runtime.device)
    for micro in range(count):
        batch = {name: tensor.to(runtime.device, non_blocking=True) for name, tensor in next(micro_batches).items()}
        # DDP averages gradients across ranks only on the last micro-batch of a step.
        if runtime.distributed:
            model.require_backward_grad_sync = micro == count - 1
        with runtime.autocast():
            loss = span_loss(model, batch) / count
        opt.scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if max_grad_norm > 0:
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), max_grad_norm)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scheduler.step()
    return loss_sum


def _train(config: TrainConfig, runtime: Runtime) -> dict[str, Any]:
    from qa.modeling import load_qa_model, load_tokenizer

    output_dir = Path(config.output_dir)
    resume_from = resolve_resume(config.resume, output_dir)
    source = str(resume_from) if resume_from else config.model
    log = _Logger(output_dir, runtime)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(source)
    examples, windows = _setup_data(config, runtime, tokenizer)
    raw_model = load_qa_model(source, require_qa_head=False).to(runtime.device)
    model = raw_model
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=device_ids)
    opt = _setup_optimization(config, runtime, raw_model, windows)
    progress = Progress()
    if resume_from is not None:
        state = load_training_state(resume_from)
        opt.optimizer.load_state_dict(state["optimizer"])
        opt.scheduler.load_state_dict(state["scheduler"])
        opt.scaler.load_state_dict(state["scaler"])
        progress = Progress(**state["progress"])
        restore_rng_states(state["rng"][min(runtime.rank, len(state["rng"]) - 1)])
        log.say(f"resumed from {resume_from} at step {progress.step} (epoch {progress.epoch})")

    def checkpoint() -> Path | None:
        all_rng = _gather_rng(runtime)  # every rank takes part; rank 0 writes
        path = None
        if runtime.is_main:
            state = {
                "optimizer": opt.optimizer.state_dict(),
                "scheduler": opt.scheduler.state_dict(),
                "scaler": opt.scaler.state_dict(),
                "progress": vars(progress).copy(),
                "rng": all_rng,
            }
            path = save_checkpoint(output_dir, progress.step, raw_model, tokenizer, config.to_dict(), state)
            prune_checkpoints(output_dir, config.save_total_limit)
        barrier(runtime)
        return path

    global_batch = config.batch_size * runtime.world_size
    log.say(
        f"{len(examples)} examples -> {len(windows)} windows; {opt.total_steps} optimizer steps of "
        f"{global_batch * config.grad_accum} windows ({config.batch_size} per device x {runtime.world_size} devices "
        f"x {config.grad_accum} accumulation); {runtime.device.type} {runtime.precision}"
        + (
            f" (--precision {config.precision} applies on CUDA only)"
            if config.precision != runtime.precision and runtime.device.type != "cuda" and config.precision != "auto"
            else ""
        )
    )
    collator = WindowCollator(windows, tokenizer.pad_token_id or 0)
    bar = _progress_bar(config, runtime, opt.total_steps, progress.step)
    began, windows_seen = time.perf_counter(), 0
    model.train()
    with _StopOnSignal() as stopper:
        while progress.step < opt.total_steps:
            batches = epoch_batches(
                windows.lengths, global_batch, config.seed, progress.epoch, config.group_by_length, runtime.distributed
            )
            loader = torch.utils.data.DataLoader(
                [rank_slice(batch, runtime) for batch in batches[progress.batch_in_epoch :]],
                batch_size=None,
                collate_fn=collator,
                num_workers=config.num_workers,
                # Its own generator: creating an iterator must not draw from the global RNG that
                # dropout uses, or a resumed run would see different dropout masks.
                generator=torch.Generator().manual_seed(config.seed + progress.epoch),
            )
            micro_batches = iter(loader)
            while progress.batch_in_epoch < len(batches) and progress.step < opt.total_steps:
                count = min(config.grad_accum, len(batches) - progress.batch_in_epoch)
                learning_rate = opt.scheduler.get_last_lr()[0]
                loss = _optimizer_step(model, raw_model, micro_batches, count, opt, runtime, config.max_grad_norm)
                progress.step += 1
                progress.batch_in_epoch += count
                windows_seen += count * global_batch
                loss_value = _mean_across_ranks(loss, runtime)
                if not math.isfinite(loss_value):
                    kept = list_checkpoints(output_dir)
                    raise QAError(
                        f"loss became {loss_value} at step {progress.step}; stopped without saving. Last good "
                        f"checkpoint: {kept[-1] if kept else 'none'}; try a lower --lr or --precision fp32"
                    )
                throughput = windows_seen / (time.perf_counter() - began)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{learning_rate:.2e}", win_s=f"{throughput:.1f}")
                if progress.step % config.log_steps == 0 or progress.step == opt.total_steps:
                    log.record(
                        step=progress.step,
                        epoch=progress.epoch,
                        loss=loss_value,
                        lr=learning_rate,
                        windows_per_s=round(throughput, 2),
                        elapsed_s=round(time.perf_counter() - began, 2),
                    )
                if config.save_steps and progress.step % config.save_steps == 0:
                    checkpoint()
                if _any_rank(stopper.requested is not None, runtime):
                    path = checkpoint()
                    bar.close()
                    log.say(
                        f"stopped by {stopper.requested or 'a signal on another rank'} at step {progress.step}: "
                        f"checkpoint {path}; continue with --resume"
                    )
                    raise SystemExit(130)
            if progress.batch_in_epoch >= len(batches):
                progress.epoch += 1
                progress.batch_in_epoch = 0
                checkpoint()
    bar.close()

    seconds = time.perf_counter() - began
    summary: dict[str, Any] = {
        "steps": progress.step,
        "seconds": round(seconds, 2),
        "windows_per_s": round(windows_seen / seconds, 2),
        "output_dir": str(output_dir),
    }
    if runtime.is_main:
        save_final_model(output_dir, raw_model, tokenizer, config.to_dict())
    barrier(runtime)
    log.say(
        f"trained {progress.step} steps in {seconds:.1f}s ({summary['windows_per_s']} windows/s); model in {output_dir}"
    )
    summary["metrics"] = _evaluate_after_training(config, raw_model, tokenizer, runtime, output_dir, log)
    return summary


def _evaluate_after_training(
    config: TrainConfig, model: Any, tokenizer: Any, runtime: Runtime, output_dir: Path, log: _Logger
) -> dict[str, Any] | None:
    """The same evaluator as evaluate.py, when there is a validation set and --no-eval was not given."""
    if not config.eval or (config.train_file is not None and config.validation_file is None):
        return None
    from qa.data import load_examples
    from qa.evaluation import AnswerSettings, evaluate_examples

    examples = load_examples(
        config.dataset, "validation", config.validation_file, for_training=False, max_samples=config.max_eval_samples
    )
    settings = AnswerSettings(
        max_length=config.max_length,
        stride=config.stride,
        max_question_length=config.max_question_length,
        batch_size=config.eval_batch_size,
    )
    metrics = evaluate_examples(model, tokenizer, examples, settings, runtime, output_dir, progress=config.progress)
    if metrics is not None:
        log.say(
            f"validation: exact_match = {metrics['exact_match']:.2f}  f1 = {metrics['f1']:.2f} "
            f"({metrics['num_examples']} examples)"
        )
    return metrics


# ---------------------------------------------------------------- small helpers


def _mean_across_ranks(value: torch.Tensor, runtime: Runtime) -> float:
    if runtime.distributed:
        value = value.clone()
        torch.distributed.all_reduce(value)
        value /= runtime.world_size
    return value.item()


def _any_rank(flag: bool, runtime: Runtime) -> bool:
    if not runtime.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=runtime.device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return bool(tensor.item())


def _gather_rng(runtime: Runtime) -> list[dict[str, Any]]:
    """Every rank's RNG states (dropout masks differ per rank), gathered for rank 0 to save."""
    mine = rng_states()
    if not runtime.distributed:
        return [mine]
    everyone: list[Any] = [None] * runtime.world_size
    torch.distributed.all_gather_object(everyone, mine)
    return everyone


class _StopOnSignal:
    """While active, SIGINT / SIGTERM ask the loop to checkpoint and stop after the current step."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = signal.Signals(signum).name


class _Logger:
    """Messages on stderr and a JSON-lines log in the output directory, from rank 0 only."""

    def __init__(self, output_dir: Path, runtime: Runtime) -> None:
        self.enabled = runtime.is_main
        self.path = output_dir / "train_log.jsonl"
        if self.enabled:
            output_dir.mkdir(parents=True, exist_ok=True)

    def say(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def record(self, **fields: Any) -> None:
        if self.enabled:
            with self.path.open("a") as handle:
                handle.write(json.dumps(fields) + "\n")


def _progress_bar(config: TrainConfig, runtime: Runtime, total: int, done: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc="training",
        unit="step",
        disable=not (config.progress and runtime.is_main),
        dynamic_ncols=True,
    )
