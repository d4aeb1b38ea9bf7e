"""The training loop: optimizer steps, and at their boundaries logging, evaluations, checkpoints, early
stopping and signals. The loop never waits for the device: losses and gradient norms stay on it and
are read back once per logging interval, which is also where a non-finite loss is caught."""

from __future__ import annotations

import copy
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from qa.config.train import TrainConfig
from qa.data.batching import (
    GROUP_KEY,
    LABEL_KEYS,
    WindowCollator,
    padded_length,
    rank_slice,
    token_bounded_parts,
    training_batches,
)
from qa.data.windows import TrainWindows
from qa.eval.evaluator import AnswerSettings, Evaluation, score_examples
from qa.files import CHECKPOINT_PREFIX
from qa.model.carried import Carried
from qa.runtime.device import Runtime, barrier, inference_batch_size, inference_runtime
from qa.train.checkpoint import prune_checkpoints, rng_states, save_checkpoint
from qa.train.distillation import Teacher
from qa.train.losses import distillation_loss, shared_norm_loss, span_loss
from qa.train.optimization import Optimization
from qa.train.reporting import RunLog, StepMeter
from qa.train.selection import BestModel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class RunPosition:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches of this epoch already consumed


@dataclass
class Run:
    """Everything the loop and the checkpoint writer share."""

    config: TrainConfig
    runtime: Runtime
    output_dir: Path
    tokenizer: PreTrainedTokenizerBase
    windows: TrainWindows
    model: torch.nn.Module  # what the loop calls: the DDP wrapper under torchrun
    raw_model: torch.nn.Module  # what is saved: never the wrapper
    opt: Optimization
    log: RunLog
    position: RunPosition = field(default_factory=RunPosition)
    trains_unanswerable: bool = False  # the training data holds SQuAD v2.0 unanswerable questions
    validation: Any = None  # the validation examples, loaded once, when the run evaluates
    best: BestModel = field(default_factory=BestModel)
    stopped_early: bool = False
    train_seconds: float = 0.0  # training time of earlier invocations of a resumed run
    teacher: Teacher | None = None  # distillation: soft targets for every micro-batch


def run_loop(run: Run) -> None:
    """Optimizer steps until the last one (or an early stop): logging, evaluations, checkpoints and
    signals at step boundaries."""
    config, position, opt = run.config, run.position, run.opt
    meter = StepMeter(config.log_steps, run.runtime)
    bar = _progress_bar(config, run.runtime, opt.total_steps, position.step)
    run.model.train()
    with _StopOnSignal() as stopper:
        while position.step < opt.total_steps and not run.stopped_early:
            batches, micro_batches = _epoch_loader(run)
            epoch_ended = False
            while not epoch_ended and position.step < opt.total_steps and not run.stopped_early:
                count = min(config.grad_accum, len(batches) - position.batch_in_epoch)
                learning_rate = float(opt.scheduler.get_last_lr()[0])
                loss, grad_norm, windows = _optimizer_step(run, micro_batches, count)
                meter.add(loss, grad_norm)
                position.step += 1
                position.batch_in_epoch += count
                run.log.windows_seen += windows * run.runtime.world_size
                epoch_ended = position.batch_in_epoch >= len(batches)
                if epoch_ended:
                    position.epoch += 1
                    position.batch_in_epoch = 0
                bar.update(1)
                if position.step % config.log_steps == 0 or position.step == opt.total_steps:
                    means = meter.read(position.step, run.output_dir)
                    run.log.record_interval(means, position.step, _epochs_done(run, len(batches)), learning_rate, bar)
                _after_step(run, meter, stopper, bar, epoch_ended, len(batches))
    bar.close()


def _after_step(run: Run, meter: StepMeter, stopper: _StopOnSignal, bar: Any, epoch_ended: bool, batches: int) -> None:
    """What a step boundary may bring: an evaluation, a checkpoint, an early stop, a signal."""
    config, step = run.config, run.position.step
    last = step == run.opt.total_steps
    schedule = config.evaluation_schedule
    evaluation = None
    every = config.eval_steps if schedule == "steps" else None  # set whenever the schedule is steps
    if (every is not None and (step % every == 0 or last)) or (schedule == "epoch" and (epoch_ended or last)):
        evaluation = _evaluate_during_training(run, bar, batches)
    periodic = config.save_steps is not None and step % config.save_steps == 0
    saved = False
    if evaluation is not None or periodic or (epoch_ended and config.epoch_checkpoints):
        meter.check(step, run.output_dir)  # never checkpoint a non-finite model
        write_checkpoint(run, evaluation)
        saved = True
    if evaluation is not None and run.best.should_stop:
        run.stopped_early = True
        run.log.say(
            f"early stopping at step {step}: {run.best.without_improvement} evaluations without a "
            f"{config.metric_for_best_model} above {run.best.best_value:.2f} + {config.early_stopping_threshold} "
            f"(best: step {run.best.best_step})"
        )
    if stopper.asked(run.runtime, step, config.log_steps):
        if not saved:
            meter.check(step, run.output_dir)
            path = write_checkpoint(run)
        else:
            path = run.output_dir / f"{CHECKPOINT_PREFIX}{step}"
        bar.close()
        run.log.say(
            f"stopped by {stopper.requested or 'a signal on another rank'} at step {step}: "
            f"checkpoint {path}; continue with --resume"
        )
        raise SystemExit(130)


def _epochs_done(run: Run, batches_per_epoch: int) -> float:
    position = run.position
    return position.epoch + position.batch_in_epoch / max(batches_per_epoch, 1)


def _epoch_loader(run: Run) -> tuple[list[Any], Any]:
    """This epoch's global batches and an iterator over this rank's remaining micro-batches."""
    config, runtime, position = run.config, run.runtime, run.position
    global_batch = config.batch_size * runtime.world_size
    batches = training_batches(
        run.windows, global_batch, config.seed, position.epoch, config.group_by_length, runtime.distributed
    )
    loader: torch.utils.data.DataLoader[dict[str, torch.Tensor]] = torch.utils.data.DataLoader(
        # A list is a map-style dataset (__getitem__ and __len__); the stubs ask for a Dataset subclass.
        [rank_slice(batch, runtime.rank, runtime.world_size) for batch in batches[position.batch_in_epoch :]],  # type: ignore[arg-type]
        batch_size=None,
        collate_fn=WindowCollator(run.windows, run.tokenizer.pad_token_id or 0),
        num_workers=config.num_workers,
        pin_memory=runtime.device.type == "cuda",
        # Its own generator: creating an iterator must not draw from the global RNG that
        # dropout uses, or a resumed run would see different dropout masks.
        generator=torch.Generator().manual_seed(config.seed + position.epoch),
    )
    return batches, iter(loader)


def _optimizer_step(run: Run, micro_batches: Any, count: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Accumulate ``count`` micro-batches, clip, step; returns the step's loss and its gradient norm
    before clipping, both on the device (no sync), and the windows this rank trained on (batches of
    whole questions, with --distractors, vary in size)."""
    runtime, opt = run.runtime, run.opt
    loss_sum = torch.zeros((), device=runtime.device)
    windows = 0
    for micro in range(count):
        micro_batch = next(micro_batches)
        parts = _token_bounded(micro_batch, run.config.max_batch_tokens)
        for number, part in enumerate(parts):
            batch = {name: tensor.to(runtime.device, non_blocking=True) for name, tensor in part.items()}
            # DDP averages gradients across ranks only on the last forward pass of a step.
            if isinstance(run.model, torch.nn.parallel.DistributedDataParallel):
                run.model.require_backward_grad_sync = micro == count - 1 and number == len(parts) - 1
            # Each part's mean loss weighted by its share of the micro-batch: the gradients add up to
            # those of the whole micro-batch's mean loss.
            share = len(batch["input_ids"]) / len(micro_batch["input_ids"]) / count
            with runtime.autocast():
                outputs = run.model(**{name: tensor for name, tensor in batch.items() if name not in LABEL_KEYS})
                if GROUP_KEY in batch:
                    loss = shared_norm_loss(outputs, batch) * share
                elif run.teacher is None:
                    loss = span_loss(outputs, batch) * share
                else:
                    alpha, temperature = run.config.distill_alpha, run.config.distill_temperature
                    teacher_logits = run.teacher.logits(batch)
                    loss = distillation_loss(outputs, teacher_logits, batch, alpha, temperature) * share
            opt.scaler.scale(loss).backward()
            loss_sum += loss.detach()
            windows += len(batch["input_ids"])
    opt.scaler.unscale_(opt.optimizer)  # a no-op unless fp16 scales the loss
    # The norm before clipping, for the log; an infinite limit clips nothing (a multiplication by 1).
    limit = run.config.max_grad_norm if run.config.max_grad_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), limit)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scheduler.step()
    return loss_sum, grad_norm.detach(), windows


def _token_bounded(batch: dict[str, torch.Tensor], max_tokens: int) -> list[dict[str, torch.Tensor]]:
    """A padded micro-batch as parts of at most ``max_tokens`` padded tokens each, each padded to its
    own longest window; the batch itself when it fits. Batches of whole questions (--distractors)
    share one softmax, so they are never split."""
    rows, width = batch["input_ids"].shape
    if rows * width <= max_tokens or GROUP_KEY in batch:
        return [batch]
    lengths = batch["attention_mask"].sum(dim=1).numpy()
    parts = []
    for positions in token_bounded_parts(lengths, max_tokens):
        index = torch.from_numpy(positions)
        narrow = padded_length(int(lengths[positions].max()))
        parts.append(
            {
                name: tensor[index, :narrow] if tensor.dim() == 2 and tensor.shape[1] == width else tensor[index]
                for name, tensor in batch.items()
            }
        )
    return parts


def write_checkpoint(run: Run, evaluation: Any = None) -> Path | None:
    """Save ``checkpoint-STEP`` from rank 0 (every rank's RNG state in it) and prune old ones, never the best.

    A checkpoint written for an evaluation holds its result files, and its config.json that evaluation's
    null threshold (a threshold belongs to the weights it was tuned on: other checkpoints carry none).
    """
    all_rng = _gather_rng(run.runtime)  # every rank takes part; rank 0 writes
    path = None
    if run.runtime.is_main:
        state = {
            "optimizer": run.opt.optimizer.state_dict(),
            "scheduler": run.opt.scheduler.state_dict(),
            "scaler": run.opt.scaler.state_dict(),
            "position": vars(run.position).copy(),
            "rng": all_rng,
            "evaluations": run.best.state_dict(),
            "clock": {"train_seconds": run.train_seconds + run.log.training_seconds},
        }
        # An evaluation checkpoint carries its evaluation's threshold and calibrator (none where they
        # cannot be fitted); other checkpoints carry none.
        calibrator = evaluation.fit_calibrator() if evaluation else None
        carried = Carried(
            evaluation.metrics.get("null_threshold") if evaluation else None,
            calibrator.to_dict() if calibrator else None,
        )
        carried.attach(run.raw_model.config)
        path = save_checkpoint(
            run.output_dir,
            run.position.step,
            run.raw_model,
            run.tokenizer,
            run.config.to_dict(),
            state,
            results=evaluation.files if evaluation else None,
        )
        Carried().attach(run.raw_model.config)
        best = run.output_dir / f"{CHECKPOINT_PREFIX}{run.best.best_step}" if run.best.best_step else None
        prune_checkpoints(run.output_dir, run.config.save_total_limit, protect=best)
    barrier(run.runtime)
    return path


def _evaluate_during_training(run: Run, bar: Any, batches_per_epoch: int) -> Evaluation | None:
    """Evaluate the current weights on every rank (sharded), score on rank 0, and let every rank know
    the record, so that all agree on the best step and on an early stop."""
    began = time.perf_counter()
    evaluation = score_validation(run, progress=False)
    run.model.train()
    seconds = time.perf_counter() - began
    run.log.paused_seconds += seconds  # evaluation time is not training time
    step, epoch = run.position.step, _epochs_done(run, batches_per_epoch)
    record = None
    if evaluation is not None:
        evaluation.metrics.update(step=step, epoch=round(epoch, 4))
        run.best.record(step, epoch, evaluation.metrics)
        run.log.record_evaluation(step, epoch, run.best.history[-1], seconds, bar)
        record = run.best.state_dict()
    if run.runtime.distributed:
        shared: list[Any] = [record]
        torch.distributed.broadcast_object_list(shared, src=0)
        run.best.load_state_dict(shared[0])
    return evaluation


def score_validation(run: Run, progress: bool) -> Evaluation | None:
    """The current weights scored on the validation data, under the precision inference uses by default on
    this device (`qa.runtime.device.inference_runtime`: on a CPU with native bf16, a bf16 copy of the
    weights, as evaluate.py loads them), so that what is fitted here (null threshold, calibrator) and the
    scores reported are the ones evaluate.py and predict.py then give; the null threshold tuned unless one
    was given (see `qa.eval.scoring.tuned_threshold`)."""
    runtime = inference_runtime(run.runtime)
    model = run.raw_model
    if runtime.bf16_weights:
        model = copy.deepcopy(run.raw_model).to(torch.bfloat16)
    return score_examples(
        model,
        run.tokenizer,
        run.validation,
        eval_settings(run),
        runtime,
        progress=progress,
        tune_null_threshold=run.config.decode.null_threshold is None,
        about={"model": f"{run.output_dir.resolve().name} at step {run.position.step}", "data": _validation_name(run)},
    )


def _validation_name(run: Run) -> str:
    file = run.config.validation_file
    return Path(file).name if file else f"{run.config.dataset} (validation)"


def eval_settings(run: Run) -> AnswerSettings:
    return AnswerSettings(
        window=run.config.window,
        decode=run.config.decode,
        batch_size=inference_batch_size(run.config.eval_batch_size, run.runtime),
        max_batch_tokens=run.config.max_batch_tokens,
        # Training on unanswerable questions makes a v2 model, whatever the validation data holds.
        version_2=run.config.version_2_with_negative or run.trains_unanswerable,
    )


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

    def asked(self, runtime: Runtime, step: int, every: int) -> bool:
        """Whether any rank was signalled. Under torchrun the ranks agree once per logging
        interval, so that the loop does not wait on a collective every step."""
        if not runtime.distributed:
            return self.requested is not None
        if step % every:
            return False
        flag = torch.tensor([int(self.requested is not None)], device=runtime.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())


def _progress_bar(config: TrainConfig, runtime: Runtime, total: int, done: int) -> Any:
    return tqdm(
        total=total,
        initial=done,
        desc="training",
        unit="step",
        disable=not (config.progress and runtime.is_main),
        dynamic_ncols=True,
    )
