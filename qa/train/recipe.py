"""The training recipe: output directory -> tokenizer -> windows -> model -> optimizer -> (resume) ->
loop (with its evaluations, `qa.train.loop`) -> final model and model card (`qa.train.finish`).

Evaluations during training (``--eval-strategy``) each write ``checkpoint-STEP`` holding their
result files; the best one is never pruned and, with ``--load-best-model-at-end``, becomes the
final model.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from qa.config.settings import raise_problems
from qa.config.train import TrainConfig
from qa.data.distractors import bounded_group_windows, check_titles, lone_questions, with_distractor_rows
from qa.data.loading import load_examples, load_training_examples
from qa.data.windows import TrainWindows, build_train_windows, default_cache_dir
from qa.errors import QAError
from qa.files import METRICS_FILE, MODEL_CARD_FILE, REPORT_FILE, REPORT_HTML_FILE, read_training_args
from qa.model.carried import drop_carried
from qa.model.loading import check_model_fits, load_qa_model, load_tokenizer, on_device
from qa.model.student import check_student_layers, shrink_to_layers
from qa.runtime.device import Runtime, inference_runtime, main_process_first, setup_runtime, shutdown
from qa.train.checkpoint import (
    clear_run,
    holds_a_run,
    load_training_state,
    output_dir_lock,
    remove_leftovers,
    resolve_resume,
    restore_rng_states,
)
from qa.train.distillation import Teacher, check_same_tokenizer
from qa.train.finish import finish_run
from qa.train.loop import Run, RunPosition, run_loop
from qa.train.metric_logging import metric_loggers
from qa.train.optimization import setup_optimization
from qa.train.reporting import RunLog
from qa.train.selection import BestModel

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def train(config: TrainConfig) -> dict[str, Any]:
    raise_problems(config.problems() + config.file_problems())
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
    resume_from = resolve_resume(config.resume, output_dir)
    if resume_from is not None:
        _check_same_data_shape(config, resume_from)
    source = str(resume_from) if resume_from else config.model
    try:
        model_config = check_model_fits(source, config.window)
    except QAError as error:  # a model that does not load is named by its flag, as the user typed it
        named = resume_from is None and str(error).startswith(f"{source}:")
        raise QAError(f"--model {error}" if named else str(error)) from None
    # a resumed student is shrunk already
    student_layers = config.student_layers if resume_from is None else None
    if student_layers is not None:
        check_student_layers(model_config, student_layers, source)
    tokenizer = load_tokenizer(source)
    if config.teacher is not None:
        check_model_fits(config.teacher, config.window)
        check_same_tokenizer(load_tokenizer(config.teacher), tokenizer, config.teacher, config.model)
    if runtime.is_main:
        _prepare_output_dir(config, output_dir, tokenizer)
    log = RunLog(runtime, metric_loggers(output_dir, config.metric_backends, config.to_dict()))
    torch.manual_seed(config.seed)
    examples, windows = _setup_data(config, runtime, tokenizer)
    raw_model = load_qa_model(source, require_qa_head=False)
    if student_layers is not None:
        kept = shrink_to_layers(raw_model, student_layers, source)
        log.say(f"student: layers {kept} of {source}")
    raw_model = on_device(raw_model, runtime.device)
    inherited = drop_carried(raw_model.config)
    if inherited.calibration is not None:
        log.say(f"{source} carried a calibrator of its scores; dropped: only this run's evaluations fit one")
    if inherited.null_threshold is not None:
        log.say(
            f"{source} carried the null threshold {inherited.null_threshold:.4f}; dropped: only this run's "
            "validation sets one"
        )
    model: torch.nn.Module = raw_model
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
        setup_optimization(config, runtime, raw_model, windows),
        log,
        trains_unanswerable=not all(answers["text"] for answers in examples["answers"]),
        validation=_load_validation(config) if config.eval and config.has_validation_data else None,
        best=BestModel(config.metric_for_best_model, config.early_stopping_patience, config.early_stopping_threshold),
        teacher=Teacher(config.teacher, runtime.device) if config.teacher is not None else None,
    )
    if resume_from is not None:
        _restore(run, resume_from)
    log.say(_plan(run, len(examples)))

    first_step = run.position.step
    log.start(resumed_at=first_step if resume_from is not None else None)
    try:
        run_loop(run)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM / SIGINT stopped it with a checkpoint
        log.close("KILLED")
        raise
    except BaseException:
        log.close("FAILED")
        raise
    seconds = log.training_seconds
    windows_per_s = log.windows_seen / max(seconds, 1e-9)
    summary: dict[str, Any] = {
        "steps": run.position.step,
        "seconds": round(seconds, 2),
        "windows_per_s": round(windows_per_s, 2),
        "output_dir": str(output_dir),
    }
    done_now = run.position.step - first_step
    log.say(
        f"trained {done_now} steps"
        + (f" ({run.position.step} in all)" if first_step else "")
        + f" in {seconds:.1f}s of training ({windows_per_s:.2f} windows/s)"
        + (" and stopped early" if run.stopped_early else "")
    )
    try:
        summary["metrics"] = finish_run(run, run.train_seconds + seconds)
    except BaseException:
        log.close("FAILED")
        raise
    log.attach([output_dir / name for name in (MODEL_CARD_FILE, METRICS_FILE, REPORT_FILE, REPORT_HTML_FILE)])
    log.close()
    return summary


def _prepare_output_dir(config: TrainConfig, output_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
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


def _setup_data(config: TrainConfig, runtime: Runtime, tokenizer: PreTrainedTokenizerBase) -> tuple[Any, TrainWindows]:
    """Examples and their windows; rank 0 tokenises (or reads the cache) first, the others then read the cache."""
    examples = load_training_examples(config.dataset, config.train_file, max_samples=config.max_train_samples)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    rows, groups = examples, None
    if config.distractors:
        if runtime.distributed:
            raise QAError("--distractors trains on one process: its batches are whole questions, not equal shares")
        titles = list(examples["title"]) if "title" in examples.column_names else [""] * len(examples)
        check_titles(titles, "--distractors")
        alone = lone_questions(titles, list(examples["context"]))
        if alone and runtime.is_main:
            print(
                f"note: --distractors: {alone} of {len(titles)} questions have no other paragraph in their article "
                "and are trained alone",
                file=sys.stderr,
            )
        rows, groups = with_distractor_rows(examples.to_dict(), config.distractors, config.seed)
    with main_process_first(runtime):
        windows = build_train_windows(
            rows, tokenizer, config.window, cache_dir=cache_dir, progress=config.progress and runtime.is_main
        )
    if groups is not None:
        if not np.all(windows.input_ids[windows.starts] == tokenizer.cls_token_id):
            raise QAError("--distractors needs a tokenizer that puts its CLS token first (BERT, RoBERTa and their kin)")
        window_groups = np.asarray(groups)[windows.window_example]
        windows = replace(windows, groups=window_groups)
        passage_number = np.asarray(rows["passage_number"])
        kept = bounded_group_windows(window_groups, windows.window_example, passage_number, config.batch_size)
        if len(kept) < len(windows):
            dropped = len(np.unique(windows.window_example)) - len(np.unique(windows.window_example[kept]))
            if runtime.is_main:
                print(
                    f"note: --distractors: {dropped} distractor paragraphs left out so that each question's windows "
                    f"fit one batch of --batch-size {config.batch_size}",
                    file=sys.stderr,
                )
            windows = windows.subset(kept)
    return examples, windows


def _check_same_data_shape(config: TrainConfig, checkpoint: Path) -> None:
    """A resumed run must build the same batches as the run it continues: --distractors changes which
    rows exist and how batches are made (checkpoints of older versions do not record it)."""
    began = read_training_args(checkpoint)
    if "distractors" in began and began["distractors"] != config.distractors:
        raise QAError(
            f"--distractors {config.distractors} (the run began with {began['distractors']}): a resumed run keeps "
            "the settings that make its batches; give the value it began with, or start a new run"
        )


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
    # The stop decision is part of the record: a run that stopped early (or was killed between its stop
    # and its final model) is finished, not continued.
    run.stopped_early = run.best.should_stop
    if run.stopped_early:
        run.log.say(f"the run stopped early at step {run.position.step}; nothing is left to train")


def _plan(run: Run, num_examples: int) -> str:
    config, runtime = run.config, run.runtime
    return (
        f"{num_examples} examples -> {len(run.windows)} windows; {run.opt.total_steps} optimizer steps of "
        + ("up to " if config.distractors else "")
        + f"{config.batch_size * runtime.world_size * config.grad_accum} windows ({config.batch_size} per device x "
        f"{runtime.world_size} devices x {config.grad_accum} accumulation); {runtime.device.type} {runtime.precision}"
        + _evaluation_precision(run)
        + (
            f"; distilling from {config.teacher} (alpha {config.distill_alpha}, T {config.distill_temperature})"
            if config.teacher
            else ""
        )
        + (
            f"; each question with up to {config.distractors} other paragraphs of its article, one softmax per question"
            if config.distractors
            else ""
        )
    )


def _evaluation_precision(run: Run) -> str:
    """Where evaluations run under another precision than training (`qa.train.loop.score_validation`)."""
    evaluation = inference_runtime(run.runtime)
    if run.validation is None or evaluation.precision == run.runtime.precision:
        return ""
    how = "bf16 weights" if evaluation.bf16_weights else f"{evaluation.precision} autocast"
    return f"; evaluations in {how}, as evaluate.py and predict.py run here by default"


def _load_validation(config: TrainConfig) -> Any:
    return load_examples(
        config.dataset, "validation", config.validation_file, for_training=False, max_samples=config.max_eval_samples
    )
