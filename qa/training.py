"""The training recipe: setup helpers, then one loop that fits on a screen.

`train` wires the pieces together: output directory -> tokenizer -> windows ->
model -> optimizer -> (resume) -> loop (with its evaluations) -> final model ->
model card. The loop never waits for the device: losses and gradient norms stay
on it and are read back once per logging interval, which is also where a
non-finite loss is caught. Evaluations during training (``--eval-strategy``)
each write ``checkpoint-STEP`` holding their result files; the best one is never
pruned and, with ``--load-best-model-at-end``, becomes the final model.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qa.batching import WindowCollator, epoch_batches, rank_slice
from qa.checkpoint import (
    clear_run,
    holds_a_run,
    load_training_state,
    output_dir_lock,
    promote_checkpoint,
    prune_checkpoints,
    remove_leftovers,
    resolve_resume,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    save_final_model,
    set_null_threshold,
    store_null_threshold,
)
from qa.config import TrainConfig, raise_problems
from qa.distillation import Teacher, check_same_tokenizer, distillation_loss, span_loss
from qa.errors import QAError
from qa.files import CHECKPOINT_PREFIX, EVALUATION_FILES, METRICS_FILE, NULL_THRESHOLD_KEY, read_json_object
from qa.reporting import RunLog, StepMeter, read_log
from qa.runtime import Runtime, barrier, inference_batch_size, main_process_first, setup_runtime, shutdown
from qa.selection import BestModel, metric_value
from qa.student import check_student_layers, shrink_to_layers
from qa.windows import TrainWindows, build_train_windows, default_cache_dir

# ---------------------------------------------------------------- components


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: biases and norm weights (all 1-D) are not decayed."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def linear_schedule(total_steps: int, warmup_steps: int) -> Any:
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
class RunPosition:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # global batches of this epoch already consumed


@dataclass
class Optimization:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    total_steps: int


@dataclass
class Run:
    """Everything the loop and the checkpoint writer share."""

    config: TrainConfig
    runtime: Runtime
    output_dir: Path
    tokenizer: Any
    windows: TrainWindows
    model: torch.nn.Module  # what the loop calls: the DDP wrapper under torchrun
    raw_model: torch.nn.Module  # what is saved: never the wrapper
    opt: Optimization
    position: RunPosition = field(default_factory=RunPosition)
    log: RunLog | None = None
    trains_unanswerable: bool = False  # the training data holds SQuAD v2.0 unanswerable questions
    validation: Any = None  # the validation examples, loaded once, when the run evaluates
    best: BestModel = field(default_factory=BestModel)
    stopped_early: bool = False
    train_seconds: float = 0.0  # training time of earlier invocations of a resumed run
    teacher: Teacher | None = None  # distillation: soft targets for every micro-batch


# ---------------------------------------------------------------- the recipe


def train(config: TrainConfig) -> dict[str, Any]:
    raise_problems(config.problems())
    runtime = setup_runtime(config.precision)
    try:
        output_dir = Path(config.output_dir)
        if not runtime.is_main:
            return _train(config, runtime, output_dir)
        with output_dir_lock(output_dir):
            return _train(config, runtime, output_dir)
    finally:
        shutdown(runtime)


def _train(config: TrainConfig, runtime: Runtime, output_dir: Path) -> dict[str, Any]:
    from qa.modeling import check_model_fits, load_qa_model, load_tokenizer

    resume_from = resolve_resume(config.resume, output_dir)
    source = str(resume_from) if resume_from else config.model
    model_config = check_model_fits(source, config.window)
    shrink = config.student_layers is not None and resume_from is None  # a resumed student is shrunk already
    if shrink:
        check_student_layers(model_config, config.student_layers, source)
    tokenizer = load_tokenizer(source)
    if config.teacher is not None:
        check_model_fits(config.teacher, config.window)
        check_same_tokenizer(load_tokenizer(config.teacher), tokenizer, config.teacher, config.model)
    if runtime.is_main:
        _prepare_output_dir(config, output_dir, tokenizer)
    log = RunLog(output_dir, runtime, config.report_to)
    torch.manual_seed(config.seed)
    examples, windows = _setup_data(config, runtime, tokenizer)
    raw_model = load_qa_model(source, require_qa_head=False)
    if shrink:
        kept = shrink_to_layers(raw_model, config.student_layers, source)
        log.say(f"student: layers {kept} of {source}")
    raw_model = raw_model.to(runtime.device)
    _forget_null_threshold(raw_model, source, log)
    model = raw_model
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(raw_model, device_ids=device_ids)
    run = Run(
        config,
        runtime,
        output_dir,
        tokenizer,
        windows,
        model,
        raw_model,
        _setup_optimization(config, runtime, raw_model, windows),
        log=log,
        trains_unanswerable=not all(answers["text"] for answers in examples["answers"]),
        validation=_load_validation(config) if config.eval and config.has_validation_data else None,
        best=BestModel(config.metric_for_best_model, config.early_stopping_patience, config.early_stopping_threshold),
        teacher=Teacher(config.teacher, runtime.device) if config.teacher is not None else None,
    )
    if resume_from is not None:
        _restore(run, resume_from)
    log.say(_plan(run, len(examples)))

    log.start(resumed_at=run.position.step if resume_from is not None else None)
    try:
        _loop(run)
    finally:
        log.close()
    seconds = log.training_seconds
    windows_per_s = log.windows_seen / max(seconds, 1e-9)
    summary: dict[str, Any] = {
        "steps": run.position.step,
        "seconds": round(seconds, 2),
        "windows_per_s": round(windows_per_s, 2),
        "output_dir": str(output_dir),
    }
    log.say(
        f"trained {run.position.step} steps in {seconds:.1f}s of training ({windows_per_s:.2f} windows/s)"
        + (" and stopped early" if run.stopped_early else "")
    )
    summary["metrics"] = _finish(run, run.train_seconds + seconds)
    return summary


def _loop(run: Run) -> None:
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
                learning_rate = opt.scheduler.get_last_lr()[0]
                meter.add(*_optimizer_step(run, micro_batches, count))
                position.step += 1
                position.batch_in_epoch += count
                run.log.windows_seen += count * config.batch_size * run.runtime.world_size
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
    if (schedule == "steps" and (step % config.eval_steps == 0 or last)) or (
        schedule == "epoch" and (epoch_ended or last)
    ):
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
    batches = epoch_batches(
        run.windows.lengths, global_batch, config.seed, position.epoch, config.group_by_length, runtime.distributed
    )
    loader = torch.utils.data.DataLoader(
        [rank_slice(batch, runtime.rank, runtime.world_size) for batch in batches[position.batch_in_epoch :]],
        batch_size=None,
        collate_fn=WindowCollator(run.windows, run.tokenizer.pad_token_id or 0),
        num_workers=config.num_workers,
        pin_memory=runtime.device.type == "cuda",
        # Its own generator: creating an iterator must not draw from the global RNG that
        # dropout uses, or a resumed run would see different dropout masks.
        generator=torch.Generator().manual_seed(config.seed + position.epoch),
    )
    return batches, iter(loader)


def _optimizer_step(run: Run, micro_batches: Any, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate ``count`` micro-batches, clip, step; returns the step's loss and its gradient norm
    before clipping, both on the device (no sync)."""
    runtime, opt = run.runtime, run.opt
    loss_sum = torch.zeros((), device=runtime.device)
    for micro in range(count):
        batch = {name: tensor.to(runtime.device, non_blocking=True) for name, tensor in next(micro_batches).items()}
        # DDP averages gradients across ranks only on the last micro-batch of a step.
        if runtime.distributed:
            run.model.require_backward_grad_sync = micro == count - 1
        with runtime.autocast():
            outputs = run.model(**{name: tensor for name, tensor in batch.items() if not name.endswith("_positions")})
            if run.teacher is None:
                loss = span_loss(outputs, batch) / count
            else:
                alpha, temperature = run.config.distill_alpha, run.config.distill_temperature
                teacher_logits = run.teacher.logits(batch)
                loss = distillation_loss(outputs, teacher_logits, batch, alpha, temperature) / count
        opt.scaler.scale(loss).backward()
        loss_sum += loss.detach()
    opt.scaler.unscale_(opt.optimizer)  # a no-op unless fp16 scales the loss
    # The norm before clipping, for the log; an infinite limit clips nothing (a multiplication by 1).
    limit = run.config.max_grad_norm if run.config.max_grad_norm > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), limit)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scheduler.step()
    return loss_sum, grad_norm.detach()


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
        set_null_threshold(run.raw_model.config, evaluation.metrics.get("null_threshold") if evaluation else None)
        path = save_checkpoint(
            run.output_dir,
            run.position.step,
            run.raw_model,
            run.tokenizer,
            run.config.to_dict(),
            state,
            results=evaluation.files if evaluation else None,
        )
        set_null_threshold(run.raw_model.config, None)
        best = run.output_dir / f"{CHECKPOINT_PREFIX}{run.best.best_step}" if run.best.best_step else None
        prune_checkpoints(run.output_dir, run.config.save_total_limit, protect=best)
    barrier(run.runtime)
    return path


def _evaluate_during_training(run: Run, bar: Any, batches_per_epoch: int) -> Any:
    """Evaluate the current weights on every rank (sharded), score on rank 0, and let every rank know
    the record, so that all agree on the best step and on an early stop."""
    began = time.perf_counter()
    evaluation = _score_validation(run, progress=False)
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
        shared = [record]
        torch.distributed.broadcast_object_list(shared, src=0)
        run.best.load_state_dict(shared[0])
    return evaluation


def _score_validation(run: Run, progress: bool) -> Any:
    """The current weights scored on the validation data: the null threshold tuned (unless one was given),
    a degenerate one kept only when v2 was asked for (see `qa.evaluation.tuned_threshold`)."""
    from qa.evaluation import score_examples

    return score_examples(
        run.raw_model,
        run.tokenizer,
        run.validation,
        _eval_settings(run),
        run.runtime,
        progress=progress,
        tune_null_threshold=run.config.decode.null_threshold is None,
        keep_degenerate_threshold=run.config.version_2_with_negative,
    )


def _eval_settings(run: Run) -> Any:
    from qa.evaluation import AnswerSettings

    return AnswerSettings(
        window=run.config.window,
        decode=run.config.decode,
        batch_size=inference_batch_size(run.config.eval_batch_size, run.runtime),
        # Training on unanswerable questions makes a v2 model, whatever the validation data holds.
        version_2=run.config.version_2_with_negative or run.trains_unanswerable,
    )


# ---------------------------------------------------------------- setup helpers


def _prepare_output_dir(config: TrainConfig, output_dir: Path, tokenizer: Any) -> None:
    """Refuse to mix two runs in one directory (unless resuming or told to start clean)."""
    remove_leftovers(output_dir)
    if config.resume is None and holds_a_run(output_dir):
        if not config.overwrite_output_dir:
            raise QAError(
                f"--output-dir {output_dir} already holds a trained model or checkpoints; continue it with "
                "--resume, start clean with --overwrite-output-dir, or pick another directory"
            )
        clear_run(output_dir, list(getattr(tokenizer, "vocab_files_names", {}).values()) + _TOKENIZER_FILES)
    output_dir.mkdir(parents=True, exist_ok=True)


_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]


def _setup_data(config: TrainConfig, runtime: Runtime, tokenizer: Any) -> tuple[Any, TrainWindows]:
    """Examples and their windows; rank 0 tokenises (or reads the cache) first, the others then read the cache."""
    from qa.data import load_training_examples

    examples = load_training_examples(config.dataset, config.train_file, max_samples=config.max_train_samples)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    with main_process_first(runtime):
        windows = build_train_windows(
            examples, tokenizer, config.window, cache_dir=cache_dir, progress=config.progress and runtime.is_main
        )
    return examples, windows


def _setup_optimization(
    config: TrainConfig, runtime: Runtime, model: torch.nn.Module, windows: TrainWindows
) -> Optimization:
    """AdamW, the linear schedule over all steps, and a GradScaler for fp16 only.

    AdamW runs its fused kernel on CUDA and on CPU too: on CPU it is several times faster than the
    default foreach kernel (bench/optimizer_step.py, figures in bench/README.md)."""
    fused = runtime.device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, fused=fused)
    total_steps = count_steps(
        len(windows),
        config.batch_size * runtime.world_size,
        config.grad_accum,
        config.epochs,
        config.max_steps,
        drop_last=runtime.distributed,
    )
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, warmup_steps))
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16")
    return Optimization(optimizer, scheduler, scaler, total_steps)


def _restore(run: Run, checkpoint: Path) -> None:
    state = load_training_state(checkpoint)
    try:
        run.opt.optimizer.load_state_dict(state["optimizer"])
        run.opt.scheduler.load_state_dict(state["scheduler"])
        run.opt.scaler.load_state_dict(state["scaler"])
        run.position = RunPosition(**state["position"])
        restore_rng_states(state["rng"][min(run.runtime.rank, len(state["rng"]) - 1)])
        if "evaluations" in state:  # checkpoints of older versions have no evaluation history
            run.best.load_state_dict(state["evaluations"])
        run.train_seconds = state.get("clock", {}).get("train_seconds", 0.0)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise QAError(f"{checkpoint}: the training state does not fit this run ({error})") from None
    run.log.say(f"resumed from {checkpoint} at step {run.position.step} (epoch {run.position.epoch})")


def _plan(run: Run, num_examples: int) -> str:
    config, runtime = run.config, run.runtime
    return (
        f"{num_examples} examples -> {len(run.windows)} windows; {run.opt.total_steps} optimizer steps of "
        f"{config.batch_size * runtime.world_size * config.grad_accum} windows ({config.batch_size} per device x "
        f"{runtime.world_size} devices x {config.grad_accum} accumulation); {runtime.device.type} {runtime.precision}"
        + (
            f"; distilling from {config.teacher} (alpha {config.distill_alpha}, T {config.distill_temperature})"
            if config.teacher
            else ""
        )
    )


def _forget_null_threshold(model: torch.nn.Module, source: str, log: RunLog) -> None:
    """A SQuAD v2 threshold belongs to the weights it was tuned for: a model fine-tuned further must not
    inherit it (on v1.1 data it would make the new model abstain). Only this run's evaluation stores one."""
    inherited = getattr(model.config, NULL_THRESHOLD_KEY, None)
    if inherited is not None:
        set_null_threshold(model.config, None)
        log.say(f"{source} carried the null threshold {inherited:.4f}; dropped: only this run's validation sets one")


def _load_validation(config: TrainConfig) -> Any:
    from qa.data import load_examples

    return load_examples(
        config.dataset, "validation", config.validation_file, for_training=False, max_samples=config.max_eval_samples
    )


def _finish(run: Run, train_seconds: float) -> dict[str, Any] | None:
    """The final model, its evaluation and the run's records: ``config.json`` last-but-one, the model card last.

    Evaluating during training: the final model is the best evaluation's weights (or the last step's
    with --no-load-best-model-at-end), and its result files come from that evaluation's checkpoint.
    Otherwise the final weights are evaluated now, as evaluate.py would (with --no-eval: not at all).
    """
    config, output_dir = run.config, run.output_dir
    chosen = run.best.best_step if config.load_best_model_at_end else run.best.last_step
    metrics = None
    if chosen is not None:
        metrics = _final_from_checkpoint(run, output_dir / f"{CHECKPOINT_PREFIX}{chosen}")
    elif run.runtime.is_main:
        save_final_model(output_dir, run.raw_model, run.tokenizer, config.to_dict())
    barrier(run.runtime)
    if chosen is None and run.validation is not None:
        metrics = _evaluate_final_model(run)
    if run.runtime.is_main:
        from qa.model_card import RunRecord, plot_curves, write_model_card

        with_curves = plot_curves(output_dir, read_log(output_dir))
        if not with_curves:
            run.log.say("note: matplotlib is not installed, so no training_curves.png (pip install matplotlib)")
        record = RunRecord(
            settings=config.to_dict(),
            metrics=metrics,
            history=run.best.history,
            selected_step=chosen if config.load_best_model_at_end else None,
            train_seconds=train_seconds,
            steps=run.position.step,
            with_curves=with_curves,
        )
        write_model_card(output_dir, record)
    barrier(run.runtime)
    return metrics


def _final_from_checkpoint(run: Run, checkpoint: Path) -> dict[str, Any] | None:
    """The final model = the weights and evaluation of ``checkpoint`` (an evaluation checkpoint of this run)."""
    from qa.evaluation import write_result_files

    metrics = None
    if run.runtime.is_main:
        metrics = read_json_object(checkpoint / METRICS_FILE, "the evaluation of the selected checkpoint")
        best = run.best
        metrics["best_model"] = {
            "step": best.best_step,
            "metric": best.metric,
            "value": best.best_value,
            "evaluations": len(best.history),
            "selected": "best" if run.config.load_best_model_at_end else "last",
        }
        promote_checkpoint(run.output_dir, checkpoint)  # its config.json carries its own null threshold
        results = {
            name: read_json_object(checkpoint / name, "an evaluation result") if name != METRICS_FILE else metrics
            for name in EVALUATION_FILES
            if (checkpoint / name).is_file()
        }
        write_result_files(run.output_dir, results)
        which = "best" if run.config.load_best_model_at_end else "last"
        value = metric_value(metrics, best.metric)
        run.log.say(
            f"final model: the {which} evaluation's weights, {checkpoint.name} ({best.metric} {value:.2f}; "
            f"{len(best.history)} evaluations); model in {run.output_dir}"
        )
        _say_threshold(run, metrics)
    return metrics


def _evaluate_final_model(run: Run) -> dict[str, Any] | None:
    """The evaluation after training of a run that did not evaluate during it."""
    from qa.evaluation import summary_line, write_result_files

    evaluation = _score_validation(run, progress=run.config.progress)
    if evaluation is None:
        return None
    metrics = evaluation.metrics
    write_result_files(run.output_dir, evaluation.files)
    run.log.say(f"validation: {summary_line(metrics)} ({metrics['num_examples']} examples); model in {run.output_dir}")
    if metrics.get("null_threshold") is not None:
        final_checkpoint = run.output_dir / f"{CHECKPOINT_PREFIX}{run.position.step}"
        for directory in (run.output_dir, final_checkpoint):
            if (directory / "config.json").is_file():
                store_null_threshold(directory, metrics["null_threshold"])
    _say_threshold(run, metrics)
    return metrics


def _say_threshold(run: Run, metrics: dict[str, Any]) -> None:
    """SQuAD v2 scoring: say which threshold the model goes out with, or why none."""
    if "best_null_threshold" not in metrics:
        return
    threshold = metrics["null_threshold"]
    answerable, unanswerable = metrics.get("HasAns_total", 0), metrics.get("NoAns_total", 0)
    counts = f"{answerable} answerable and {unanswerable} unanswerable validation questions"
    if threshold is None:
        kind = "answerable" if unanswerable == 0 else "unanswerable"
        run.log.say(
            f"no null threshold stored: the validation data holds only {kind} questions ({counts}), so the F1-best "
            "threshold would answer every question or none; the model always answers. Validate on data with both "
            "kinds, or pass --version-2-with-negative to store the F1-best threshold anyway"
        )
        return
    if run.config.decode.null_threshold is not None:
        run.log.say(
            f"stored the null threshold given, {threshold:.4f} (the F1-best on {counts} would be "
            f"{metrics['best_null_threshold']:.4f})"
        )
        return
    run.log.say(
        f"stored null threshold {threshold:.4f} in {run.output_dir / 'config.json'} (F1-best on {counts}: "
        f"F1 {metrics['best_null_threshold_f1']:.2f})"
    )


# ---------------------------------------------------------------- small helpers


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
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        desc="training",
        unit="step",
        disable=not (config.progress and runtime.is_main),
        dynamic_ncols=True,
    )
