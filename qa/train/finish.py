"""The end of a run: the final model (the selected evaluation's checkpoint, or the last weights
evaluated now), its result files and null threshold, and the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qa.eval.evaluator import write_result_files
from qa.eval.scoring import MIN_QUESTIONS_OF_EACH_KIND, summary_line
from qa.files import CHECKPOINT_PREFIX, EVALUATION_FILES, METRICS_FILE, read_json_object
from qa.model.carried import store_carried
from qa.runtime.device import barrier
from qa.train.checkpoint import promote_checkpoint, save_final_model
from qa.train.loop import Run, score_validation
from qa.train.model_card import RunRecord, plot_curves, write_model_card
from qa.train.reporting import read_log
from qa.train.selection import metric_value


def finish_run(run: Run, train_seconds: float) -> dict[str, Any] | None:
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
        log = read_log(output_dir)
        with_curves = plot_curves(output_dir, log)
        if not with_curves:
            run.log.say("note: matplotlib is not installed, so no training_curves.png (pip install matplotlib)")
        record = RunRecord(
            settings=config.to_dict(),
            metrics=metrics,
            history=run.best.history,
            selected_step=chosen if config.load_best_model_at_end else None,
            train_seconds=train_seconds,
            steps=run.position.step,
            epochs=max((float(row["epoch"]) for row in log if "epoch" in row), default=0.0),
            with_curves=with_curves,
        )
        write_model_card(output_dir, record)
    barrier(run.runtime)
    return metrics


def _final_from_checkpoint(run: Run, checkpoint: Path) -> dict[str, Any] | None:
    """The final model = the weights and evaluation of ``checkpoint`` (an evaluation checkpoint of this run)."""
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
            name: _read_result(checkpoint / name) if name != METRICS_FILE else metrics
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
        say_threshold(run, metrics)
    return metrics


def _evaluate_final_model(run: Run) -> dict[str, Any] | None:
    """The evaluation after training of a run that did not evaluate during it."""
    evaluation = score_validation(run, progress=run.config.progress)
    if evaluation is None:
        return None
    metrics = evaluation.metrics
    write_result_files(run.output_dir, evaluation.files)
    run.log.say(f"validation: {summary_line(metrics)} ({metrics['num_examples']} examples); model in {run.output_dir}")
    if metrics.get("null_threshold") is not None:
        final_checkpoint = run.output_dir / f"{CHECKPOINT_PREFIX}{run.position.step}"
        for directory in (run.output_dir, final_checkpoint):
            if (directory / "config.json").is_file():
                store_carried(directory, null_threshold=metrics["null_threshold"])
    calibrator = evaluation.fit_calibrator()
    if calibrator is not None and run.runtime.is_main:
        store_carried(run.output_dir, calibration=calibrator.to_dict())
    say_threshold(run, metrics)
    return metrics


def say_threshold(run: Run, metrics: dict[str, Any]) -> None:
    """SQuAD v2 scoring: say which threshold the model goes out with, or why none."""
    if "best_null_threshold" not in metrics:
        return
    threshold = metrics["null_threshold"]
    answerable, unanswerable = metrics.get("HasAns_total", 0), metrics.get("NoAns_total", 0)
    counts = f"{answerable} answerable and {unanswerable} unanswerable validation questions"
    if threshold is None:
        run.log.say(
            f"no null threshold stored: tuning one needs at least {MIN_QUESTIONS_OF_EACH_KIND} answerable and "
            f"{MIN_QUESTIONS_OF_EACH_KIND} unanswerable validation questions, and there are {counts}, so the "
            "model always answers. Validate on more of both kinds, or give one with --null-threshold"
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


def _read_result(path: Path) -> Any:
    if path.suffix == ".html":
        return path.read_text(encoding="utf-8")
    return read_json_object(path, "an evaluation result")
