"""`python train.py`: fine-tune an encoder for extractive QA (see --help and README)."""

from __future__ import annotations

import argparse
from typing import Any

from qa.cli_args import ArgumentParser
from qa.config import TrainConfig
from qa.errors import exit_on_qa_error
from qa.runtime import PRECISIONS

DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="train.py", description="Fine-tune a model for SQuAD-style question answering.")
    group = parser.add_argument_group("model and data")
    group.add_argument("--model", default=DEFAULTS.model, help="hub id or local model directory")
    group.add_argument("--dataset", default=DEFAULTS.dataset, help="hub dataset (train and validation splits)")
    group.add_argument("--train-file", help="local SQuAD JSON / JSON lines / CSV / Parquet training file")
    group.add_argument("--validation-file", help="local validation file (evaluated after training)")
    group.add_argument("--max-train-samples", type=int, help="train on the first N examples")
    group.add_argument("--max-eval-samples", type=int, help="evaluate on the first N examples")
    group.add_argument("--max-length", type=int, default=DEFAULTS.max_length, help="tokens per window")
    group.add_argument("--stride", type=int, default=DEFAULTS.stride, help="tokens shared by consecutive windows")
    group.add_argument("--cache-dir", help="tokenised-window cache (default: $QA_CACHE_DIR or ~/.cache/qa-squad)")

    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=float, default=DEFAULTS.epochs, help="passes over the training windows")
    group.add_argument("--max-steps", type=int, help="optimizer steps to run; overrides --epochs")
    group.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak learning rate (AdamW)")
    group.add_argument(
        "--weight-decay",
        type=float,
        default=DEFAULTS.weight_decay,
        help="AdamW weight decay (not on biases and LayerNorm weights)",
    )
    group.add_argument(
        "--warmup-ratio",
        type=float,
        default=DEFAULTS.warmup_ratio,
        help="fraction of steps with linear warmup; then linear decay to 0",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help="training windows per device per micro-batch (global batch = this x devices x accum)",
    )
    group.add_argument("--eval-batch-size", type=int, default=DEFAULTS.eval_batch_size, help="windows per device")
    group.add_argument("--grad-accum", type=int, default=DEFAULTS.grad_accum, help="micro-batches per optimizer step")
    group.add_argument("--max-grad-norm", type=float, default=DEFAULTS.max_grad_norm, help="clip gradients; 0: off")
    group.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds shuffling and dropout")
    group.add_argument(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="plain shuffled batches instead of batches of similar length",
    )

    group = parser.add_argument_group("hardware")
    group.add_argument(
        "--precision",
        default=DEFAULTS.precision,
        choices=PRECISIONS,
        help="CUDA autocast: auto = bf16 where supported, else fp16 with a GradScaler; CPU: fp32",
    )
    group.add_argument("--num-workers", type=int, default=DEFAULTS.num_workers, help="DataLoader worker processes")

    group = parser.add_argument_group("output, checkpoints and evaluation")
    group.add_argument("--output-dir", default=DEFAULTS.output_dir, help="final model, checkpoints, logs, metrics")
    group.add_argument("--save-steps", type=int, help="also checkpoint every N optimizer steps (always at epoch end)")
    group.add_argument("--save-total-limit", type=int, help="keep only the newest N checkpoints")
    group.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        help="continue from the latest checkpoint in --output-dir, or from the one given",
    )
    group.add_argument("--log-steps", type=int, default=DEFAULTS.log_steps, help="write train_log.jsonl every N steps")
    group.add_argument("--no-eval", dest="eval", action="store_false", help="skip evaluation after training")
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    return TrainConfig(**vars(build_parser().parse_args(argv)))


@exit_on_qa_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    from qa.training import train

    return train(config_from_args(argv))
