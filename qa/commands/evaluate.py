"""`python evaluate.py --ckpt PATH`: exact match and F1 of a checkpoint on a validation set."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from qa.config.cli import command_parser, parse_config
from qa.config.evaluate import EvaluateConfig
from qa.errors import QAError, exit_on_qa_error
from qa.files import PREDICTIONS_FILE, read_json_object, read_training_args


def config_from_args(argv: list[str] | None = None) -> EvaluateConfig:
    parser = command_parser("evaluate.py", "SQuAD exact match / F1 of a question-answering checkpoint.", EvaluateConfig)
    return parse_config(parser, EvaluateConfig, argv)


def _writable_output_dir(config: EvaluateConfig) -> Path:
    """Where the result files go, checked before inference rather than after it has run; by the process
    that writes them (under torchrun, rank 0: the ranks' probes would race on the directory they made)."""
    output_dir = Path(config.output_dir or (config.ckpt if Path(config.ckpt).is_dir() else "evaluation"))
    if output_dir.exists() and not output_dir.is_dir():
        raise QAError(f"--output-dir {output_dir} is a file, not a directory")
    if int(os.environ.get("RANK", "0")) != 0:
        return output_dir
    probe = output_dir / ".write-test"
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
        if created:
            output_dir.rmdir()  # made again when the results are written: a refused run leaves nothing
    except OSError as error:
        raise QAError(f"--output-dir {output_dir}: cannot write the result files there ({error.strerror})") from None
    return output_dir


def _recorded_validation_file(config: EvaluateConfig, argv: list[str]) -> EvaluateConfig:
    """No data given (no --validation-file, no --dataset or --split): the validation file the checkpoint's
    run recorded with its settings, where there is one and it is still there (said on stderr)."""
    given = {argument.split("=", 1)[0] for argument in argv}
    if config.validation_file is not None or given & {"--dataset", "--dataset_name", "--split"}:
        return config
    recorded = read_training_args(config.ckpt).get("validation_file")
    if not isinstance(recorded, str) or not Path(recorded).is_file():
        return config
    print(
        f"note: no data given: evaluating on {recorded}, the validation file of the run that trained {config.ckpt} "
        "(--validation-file or --dataset to choose)",
        file=sys.stderr,
    )
    return replace(config, validation_file=recorded)


def _about(config: EvaluateConfig) -> dict[str, str]:
    """What the report says it measured: the model (a local directory by its name) and the data."""
    checkpoint = Path(config.ckpt)
    model = checkpoint.resolve().name if checkpoint.exists() else config.ckpt
    data = Path(config.validation_file).name if config.validation_file else f"{config.dataset} ({config.split})"
    return {"model": model, "data": data}


@exit_on_qa_error
def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    config = _recorded_validation_file(config_from_args(argv), sys.argv[1:] if argv is None else argv)
    output_dir = _writable_output_dir(config)
    from qa.data.loading import load_examples
    from qa.eval.answering import check_checkpoint, load_reader
    from qa.eval.evaluator import evaluate_examples
    from qa.eval.scoring import summary_line
    from qa.runtime.device import shutdown

    checked = check_checkpoint(config.ckpt, config.window)
    if config.calibrate and not (Path(config.ckpt) / "config.json").is_file():
        raise QAError(f"--calibrate stores the calibrator in the checkpoint: {config.ckpt} is not a local directory")
    examples = load_examples(
        config.dataset, config.split, config.validation_file, for_training=False, max_samples=config.max_eval_samples
    )
    if config.calibrate:
        from qa.eval.calibrate import check_calibration_data

        check_calibration_data(examples)
    reader = load_reader(
        config.ckpt,
        config.window,
        config.decode,
        config.batch_size,
        config.precision,
        config.max_batch_tokens,
        calibrating=config.calibrate,
        checked=checked,
    )
    reader.settings.version_2 = config.version_2_with_negative
    if config.distractors is not None:
        from qa.eval.distractors import evaluate_with_distractors

        metrics = evaluate_with_distractors(reader, examples, config.distractors, output_dir)
        shutdown(reader.runtime)
        return metrics
    if config.calibrate:
        from qa.eval.calibrate import evaluate_and_calibrate

        evaluation = evaluate_and_calibrate(
            reader,
            examples,
            output_dir,
            save_nbest=config.save_nbest,
            progress=config.progress,
            with_report=config.report != "none",
        )
    else:
        evaluation = evaluate_examples(
            reader.model,
            reader.tokenizer,
            examples,
            reader.settings,
            reader.runtime,
            output_dir,
            save_nbest=config.save_nbest,
            progress=config.progress,
            with_report=config.report != "none",
            about=_about(config),
        )
    shutdown(reader.runtime)
    metrics = evaluation.metrics if evaluation is not None else None
    stored_threshold = reader.settings.decode.null_threshold if config.decode.null_threshold is None else None
    if metrics is not None and stored_threshold is not None:
        _say_if_the_stored_threshold_declines_most(output_dir, stored_threshold)
    if metrics is not None:
        print(
            f"{summary_line(metrics)}  ({metrics['num_examples']} examples, {metrics['num_windows']} windows; "
            f"results in {output_dir})"
        )
    return metrics


def _say_if_the_stored_threshold_declines_most(output_dir: Path, threshold: float) -> None:
    """A v2 model's stored threshold on data it does not suit (say, v1.1 questions) declines nearly
    everything and scores near 0 with no word why; say how many it declined and how to override it."""
    answers = read_json_object(output_dir / PREDICTIONS_FILE, "the predictions")
    declined = sum(answer == "" for answer in answers.values())
    if declined > len(answers) / 2:
        print(
            f"note: the null threshold stored with the model ({threshold:.4f}) declined {declined} of "
            f"{len(answers)} questions; if these questions have answers, override it with --null-threshold "
            "(a larger value answers more)",
            file=sys.stderr,
        )
