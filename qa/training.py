"""The training recipe: setup helpers, then one loop that fits on a screen.

`train` wires the pieces together: output directory -> tokenizer -> windows ->
model -> optimizer -> (resume) -> loop -> final model -> evaluation. The loop
never waits for the device: losses stay on it and are read back once per
logging interval, which is also where a non-finite loss is caught.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from qa.batching import WindowCollator, epoch_batches, rank_slice
from qa.checkpoint import (
    clear_run,
    holds_a_run,
    list_checkpoints,
    load_training_state,
    output_dir_lock,
    prune_checkpoints,
    remove_leftovers,
    resolve_resume,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    save_final_model,
    store_null_threshold,
)
from qa.config import TrainConfig, raise_problems
from qa.errors import QAError
from qa.files import LOG_FILE, NULL_THRESHOLD_KEY
from qa.runtime import Runtime, barrier, inference_batch_size, main_process_first, setup_runtime, shutdown
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
    check_model_fits(source, config.window)
    tokenizer = load_tokenizer(source)
    if runtime.is_main:
        _prepare_output_dir(config, output_dir, tokenizer)
    log = RunLog(output_dir, runtime)
    torch.manual_seed(config.seed)
    examples, windows = _setup_data(config, runtime, tokenizer)
    raw_model = load_qa_model(source, require_qa_head=False).to(runtime.device)
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
    )
    if resume_from is not None:
        _restore(run, resume_from)
    log.say(_plan(run, len(examples)))

    log.began = time.perf_counter()
    _loop(run)
    seconds = time.perf_counter() - log.began
    windows_per_s = log.windows_seen / seconds
    summary: dict[str, Any] = {
        "steps": run.position.step,
        "seconds": round(seconds, 2),
        "windows_per_s": round(windows_per_s, 2),
        "output_dir": str(output_dir),
    }
    if runtime.is_main:
        save_final_model(output_dir, raw_model, tokenizer, config.to_dict())
    barrier(runtime)
    log.say(
        f"trained {run.position.step} steps in {seconds:.1f}s ({windows_per_s:.2f} windows/s); model in {output_dir}"
    )
    summary["metrics"] = _evaluate_after_training(run)
    return summary


def _loop(run: Run) -> None:
    """Optimizer steps until the last one: logging, checkpoints and signals at step boundaries."""
    config, position, opt = run.config, run.position, run.opt
    losses = LossMeter(config.log_steps, run.runtime)
    bar = _progress_bar(config, run.runtime, opt.total_steps, position.step)
    run.model.train()
    with _StopOnSignal() as stopper:
        while position.step < opt.total_steps:
            batches, micro_batches = _epoch_loader(run)
            saved_at = None
            while position.batch_in_epoch < len(batches) and position.step < opt.total_steps:
                count = min(config.grad_accum, len(batches) - position.batch_in_epoch)
                learning_rate = opt.scheduler.get_last_lr()[0]
                losses.add(_optimizer_step(run, micro_batches, count))
                position.step += 1
                position.batch_in_epoch += count
                run.log.windows_seen += count * config.batch_size * run.runtime.world_size
                bar.update(1)
                if position.step % config.log_steps == 0 or position.step == opt.total_steps:
                    run.log.record_interval(losses.read(position.step, run.output_dir), position, learning_rate, bar)
                if config.save_steps and position.step % config.save_steps == 0:
                    losses.check(position.step, run.output_dir)  # never checkpoint a non-finite model
                    write_checkpoint(run)
                    saved_at = position.step
                if stopper.asked(run.runtime, position.step, config.log_steps):
                    losses.check(position.step, run.output_dir)
                    path = write_checkpoint(run)
                    bar.close()
                    run.log.say(
                        f"stopped by {stopper.requested or 'a signal on another rank'} at step {position.step}: "
                        f"checkpoint {path}; continue with --resume"
                    )
                    raise SystemExit(130)
            if position.batch_in_epoch >= len(batches):
                position.epoch += 1
                position.batch_in_epoch = 0
                if config.epoch_checkpoints and saved_at != position.step:
                    losses.check(position.step, run.output_dir)
                    write_checkpoint(run)
    bar.close()


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


def _optimizer_step(run: Run, micro_batches: Any, count: int) -> torch.Tensor:
    """Accumulate ``count`` micro-batches, clip, step; returns the step's loss on the device (no sync)."""
    runtime, opt = run.runtime, run.opt
    loss_sum = torch.zeros((), device=runtime.device)
    for micro in range(count):
        batch = {name: tensor.to(runtime.device, non_blocking=True) for name, tensor in next(micro_batches).items()}
        # DDP averages gradients across ranks only on the last micro-batch of a step.
        if runtime.distributed:
            run.model.require_backward_grad_sync = micro == count - 1
        with runtime.autocast():
            loss = span_loss(run.model, batch) / count
        opt.scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if run.config.max_grad_norm > 0:
        opt.scaler.unscale_(opt.optimizer)
        torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), run.config.max_grad_norm)
    opt.scaler.step(opt.optimizer)
    opt.scaler.update()
    opt.optimizer.zero_grad(set_to_none=True)
    opt.scheduler.step()
    return loss_sum


def write_checkpoint(run: Run) -> Path | None:
    """Save ``checkpoint-STEP`` from rank 0 (every rank's RNG state in it) and prune old ones."""
    all_rng = _gather_rng(run.runtime)  # every rank takes part; rank 0 writes
    path = None
    if run.runtime.is_main:
        state = {
            "optimizer": run.opt.optimizer.state_dict(),
            "scheduler": run.opt.scheduler.state_dict(),
            "scaler": run.opt.scaler.state_dict(),
            "position": vars(run.position).copy(),
            "rng": all_rng,
        }
        path = save_checkpoint(
            run.output_dir, run.position.step, run.raw_model, run.tokenizer, run.config.to_dict(), state
        )
        prune_checkpoints(run.output_dir, run.config.save_total_limit)
    barrier(run.runtime)
    return path


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

    AdamW runs its fused kernel on CUDA and on CPU too: on 2 AVX2 cores a MiniLM step took
    25 ms fused against 119 ms for the default foreach kernel (bench/optimizer_step.py)."""
    fused = runtime.device.type in ("cuda", "cpu")
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr, fused=fused)
    global_batch = config.batch_size * runtime.world_size
    batches_per_epoch = len(epoch_batches(windows.lengths, global_batch, config.seed, 0, False, runtime.distributed))
    if batches_per_epoch == 0:
        raise QAError(f"{len(windows)} training windows do not fill one batch of {global_batch}")
    total_steps = config.max_steps or math.ceil(config.epochs * math.ceil(batches_per_epoch / config.grad_accum))
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
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise QAError(f"{checkpoint}: the training state does not fit this run ({error})") from None
    run.log.say(f"resumed from {checkpoint} at step {run.position.step} (epoch {run.position.epoch})")


def _plan(run: Run, num_examples: int) -> str:
    config, runtime = run.config, run.runtime
    return (
        f"{num_examples} examples -> {len(run.windows)} windows; {run.opt.total_steps} optimizer steps of "
        f"{config.batch_size * runtime.world_size * config.grad_accum} windows ({config.batch_size} per device x "
        f"{runtime.world_size} devices x {config.grad_accum} accumulation); {runtime.device.type} {runtime.precision}"
    )


def _forget_null_threshold(model: torch.nn.Module, source: str, log: RunLog) -> None:
    """A SQuAD v2 threshold belongs to the weights it was tuned for: a model fine-tuned further must not
    inherit it (on v1.1 data it would make the new model abstain). Only this run's evaluation stores one."""
    inherited = getattr(model.config, NULL_THRESHOLD_KEY, None)
    if inherited is not None:
        delattr(model.config, NULL_THRESHOLD_KEY)
        log.say(f"{source} carried the null threshold {inherited:.4f}; dropped: only this run's validation sets one")


def _evaluate_after_training(run: Run) -> dict[str, Any] | None:
    """The same evaluator as evaluate.py, when there is a validation set and --no-eval was not given."""
    config = run.config
    if not config.eval or (config.train_file is not None and config.validation_file is None):
        return None
    from qa.data import load_examples
    from qa.evaluation import AnswerSettings, evaluate_examples, summary_line

    examples = load_examples(
        config.dataset, "validation", config.validation_file, for_training=False, max_samples=config.max_eval_samples
    )
    settings = AnswerSettings(
        window=config.window,
        batch_size=inference_batch_size(config.eval_batch_size, run.runtime),
        # Training on unanswerable questions makes a v2 model, whatever the validation data holds.
        version_2=config.version_2_with_negative or run.trains_unanswerable,
    )
    metrics = evaluate_examples(
        run.raw_model,
        run.tokenizer,
        examples,
        settings,
        run.runtime,
        run.output_dir,
        progress=config.progress,
        tune_null_threshold=True,
        keep_degenerate_threshold=config.version_2_with_negative,
    )
    if metrics is not None:
        run.log.say(f"validation: {summary_line(metrics)} ({metrics['num_examples']} examples)")
        if "best_null_threshold" in metrics:
            _store_tuned_threshold(run, metrics)
    return metrics


def _store_tuned_threshold(run: Run, metrics: dict[str, Any]) -> None:
    """SQuAD v2 scoring: the model goes out with the threshold its validation chose, or, where none
    could be chosen, with none (it then always answers); either way the run says which and why."""
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
    final_checkpoint = run.output_dir / f"checkpoint-{run.position.step}"
    for directory in (run.output_dir, final_checkpoint):
        if (directory / "config.json").is_file():
            store_null_threshold(directory, threshold)
    run.log.say(
        f"stored null threshold {threshold:.4f} in {run.output_dir / 'config.json'} (F1-best on {counts}: "
        f"F1 {metrics['best_null_threshold_f1']:.2f})"
    )


# ---------------------------------------------------------------- small helpers


class LossMeter:
    """Step losses kept on the device; read back (one sync) once per logging interval.

    Reading returns the interval's mean across steps and ranks and stops the run,
    naming the step, at the first non-finite loss.
    """

    def __init__(self, log_steps: int, runtime: Runtime) -> None:
        self.runtime = runtime
        self.buffer = torch.zeros(log_steps, device=runtime.device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.buffer[self.count] = loss
        self.count += 1

    def read(self, step: int, output_dir: Path) -> float | None:
        """The mean loss since the last read (None if no step since), after `check`."""
        host = self.check(step, output_dir)
        self.count = 0
        return sum(host) / len(host) if host else None

    def check(self, step: int, output_dir: Path) -> list[float]:
        """The interval's losses on the host; a non-finite one stops the run with its step."""
        if self.count == 0:
            return []
        values = self.buffer[: self.count].clone()
        if self.runtime.distributed:
            torch.distributed.all_reduce(values)
            values /= self.runtime.world_size
        host = values.tolist()
        first_step = step - self.count + 1
        for offset, value in enumerate(host):
            if not math.isfinite(value):
                kept = list_checkpoints(output_dir)
                raise QAError(
                    f"loss became {value} at step {first_step + offset}; stopped without saving. Last good "
                    f"checkpoint: {kept[-1] if kept else 'none'}; try a lower --lr or --precision fp32"
                )
        return host


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


class RunLog:
    """Messages on stderr and a JSON-lines log in the output directory, from rank 0 only."""

    def __init__(self, output_dir: Path, runtime: Runtime) -> None:
        self.enabled = runtime.is_main
        self.path = output_dir / LOG_FILE
        self.began = time.perf_counter()
        self.windows_seen = 0

    def say(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def record_interval(self, mean_loss: float | None, position: RunPosition, learning_rate: float, bar: Any) -> None:
        if not self.enabled or mean_loss is None:
            return
        elapsed = time.perf_counter() - self.began
        windows_per_s = self.windows_seen / elapsed
        bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{learning_rate:.2e}", win_s=f"{windows_per_s:.1f}")
        fields = {
            "step": position.step,
            "epoch": position.epoch,
            "loss": mean_loss,  # mean over the steps since the previous record
            "lr": learning_rate,
            "windows_per_s": round(windows_per_s, 2),
            "elapsed_s": round(elapsed, 2),
        }
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
