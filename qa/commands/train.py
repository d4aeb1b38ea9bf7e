"""`python train.py`: fine-tune an encoder for extractive QA (see --help and README)."""

from __future__ import annotations

from typing import Any

from qa.config.cli import command_parser, parse_config
from qa.config.train import TrainConfig
from qa.errors import exit_on_qa_error


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    parser = command_parser(
        "train.py", "Fine-tune a model for SQuAD-style question answering.", TrainConfig, settings_file=True
    )
    return parse_config(parser, TrainConfig, argv)


@exit_on_qa_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    config = config_from_args(argv)
    from qa.train.recipe import train

    return train(config)
