"""Training configuration: plain values with one check that reports every problem at once."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qa.errors import QAError
from qa.runtime import PRECISIONS


@dataclass
class TrainConfig:
    """Everything `python train.py` can be told; defaults reproduce the reference recipe."""

    model: str = "distilbert-base-cased"  # hub id or local model directory
    dataset: str = "squad"  # hub dataset, used when no --train-file is given
    train_file: str | None = None  # local SQuAD JSON / JSON lines / CSV / Parquet
    validation_file: str | None = None
    output_dir: str = "finetuned-squad"
    epochs: float = 3.0
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.0  # fraction of all optimizer steps spent warming up linearly
    batch_size: int = 16  # windows per device per micro-batch
    eval_batch_size: int = 64
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0  # 0 turns clipping off
    max_length: int = 384
    stride: int = 128
    max_question_length: int = 64
    max_steps: int | None = None  # overrides epochs
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    seed: int = 42
    save_steps: int | None = None  # also checkpoint every N optimizer steps
    save_total_limit: int | None = None  # keep only the newest N checkpoints
    resume: str | None = None  # "latest" or a checkpoint directory
    precision: str = "auto"
    num_workers: int = 0
    group_by_length: bool = True
    eval: bool = True
    log_steps: int = 10
    cache_dir: str | None = None  # tokenised windows; default ~/.cache/qa-squad
    progress: bool = True

    def check(self) -> None:
        """Raise one `QAError` listing every bad value, before any work starts."""
        problems = []

        def need(condition: bool, message: str) -> None:
            if not condition:
                problems.append(message)

        need(self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(self.epochs > 0, f"--epochs must be > 0, got {self.epochs}")
        need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("batch_size", "eval_batch_size", "grad_accum", "max_length", "stride", "log_steps"):
            need(getattr(self, name) > 0, f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name in ("max_steps", "max_train_samples", "max_eval_samples", "save_steps", "save_total_limit"):
            value = getattr(self, name)
            need(value is None or value > 0, f"--{name.replace('_', '-')} must be > 0, got {value}")
        need(self.max_grad_norm >= 0, f"--max-grad-norm must be >= 0, got {self.max_grad_norm}")
        need(self.num_workers >= 0, f"--num-workers must be >= 0, got {self.num_workers}")
        need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}")
        need(
            self.stride < self.max_length - 6,
            f"--stride ({self.stride}) must be smaller than --max-length ({self.max_length}) minus 6 "
            "(room for the question and special tokens)",
        )
        need(self.max_length <= 4096, f"--max-length {self.max_length} is larger than any supported model")
        output = Path(self.output_dir)
        need(not output.exists() or output.is_dir(), f"--output-dir {output} is a file, not a directory")
        if self.train_file is not None:
            need(Path(self.train_file).is_file(), f"--train-file {self.train_file}: no such file")
        if self.validation_file is not None:
            need(Path(self.validation_file).is_file(), f"--validation-file {self.validation_file}: no such file")
        if problems:
            raise QAError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
