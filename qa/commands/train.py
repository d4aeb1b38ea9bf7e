"""`python train.py`: fine-tune an encoder for extractive QA (see --help and README)."""

from __future__ import annotations

import os
from typing import Any

from qa.config.cli import command_parser, parse_config
from qa.config.train import TrainConfig
from qa.errors import exit_on_qa_error
from qa.files import json_line


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    parser = command_parser(
        "train.py", "Fine-tune a model for SQuAD-style question answering.", TrainConfig, settings_file=True
    )
    return parse_config(parser, TrainConfig, argv)


@exit_on_qa_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_args(argv)
    from qa.train.recipe import train

    summary = train(config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json_line(result_line(summary)), flush=True)
    return summary


def result_line(summary: dict[str, Any]) -> dict[str, Any]:
    """train.py's one line on standard output: where the model is and the exact match and F1 of its
    evaluation (the selected one's step; null where the run did not evaluate)."""
    metrics = summary.get("metrics") or {}
    return {
        "model": summary["output_dir"],
        "steps": summary["steps"],
        "exact_match": metrics.get("exact_match"),
        "f1": metrics.get("f1"),
        "evaluated_at_step": metrics.get("step", summary["steps"] if metrics else None),
    }
