"""The settings shared by training, evaluation and prediction, each defined once.

A setting is a dataclass field: its default, its help text (field metadata, from
which `qa.config.cli` makes the command-line flag) and, in ``problems()``, its one
validity rule. Nothing here imports torch, so ``--help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qa.errors import QAError
from qa.files import DEFAULT_OUTPUT_DIR

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PRECISION_HELP = (
    "number format. CUDA: auto = bf16 autocast where supported, else fp16 with a GradScaler. CPU: training "
    "auto = fp32 (bf16 / fp16: CPU autocast); inference (evaluate.py, predict.py) auto = bf16 weights where the "
    "CPU computes bf16 natively (AVX512-BF16 or AMX), else fp32; fp16 on a CPU is slow"
)
BATCH_DEFAULT = "(default: 8 on CPU, 64 on GPU)"
# A question/context pair takes 3 special tokens (BERT: [CLS] q [SEP] c [SEP]) or 4 (RoBERTa:
# <s> q </s></s> c </s>). Rules that must hold before a tokenizer is loaded assume the larger.
MAX_SPECIAL_TOKENS = 4


def setting(default: Any = None, help: str = "", **extra: Any) -> Any:
    """A dataclass field carrying its command-line help (and extras such as ``choices``)."""
    metadata = {"help": help, **extra}
    if callable(default) and isinstance(default, type):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_flag(item: Any) -> str:
    """The flag of a dataclass field: its name's, unless its metadata names the flag (``flag=``)."""
    return flag(item.metadata.get("flag", item.name))


@dataclass
class WindowSettings:
    """How a question and a long context become model windows."""

    max_length: int = setting(
        384, "tokens per window: question, context and special tokens", run_qa=("--max_seq_length",)
    )
    stride: int = setting(128, "tokens shared by consecutive windows of a long context", run_qa=("--doc_stride",))
    max_question_length: int = setting(64, "longer questions are cut to this many tokens")

    def problems(self) -> list[str]:
        found = []
        if self.max_length < MAX_SPECIAL_TOKENS + 2:
            found.append(f"--max-length must be at least {MAX_SPECIAL_TOKENS + 2}, got {self.max_length}")
        if self.stride < 0:
            found.append(f"--stride must be >= 0, got {self.stride}")
        elif self.max_length >= MAX_SPECIAL_TOKENS + 2 and self.stride > self.largest_stride:
            # One rule for every command: a window holds the special tokens, at least one
            # question token and more context tokens than the stride (or windows never advance).
            found.append(
                f"--stride ({self.stride}) leaves no room for the question and special tokens in a window of "
                f"--max-length {self.max_length}; use a stride of at most {self.largest_stride}"
            )
        if self.max_question_length <= 0:
            found.append(f"--max-question-length must be > 0, got {self.max_question_length}")
        return found

    @property
    def largest_stride(self) -> int:
        return self.max_length - MAX_SPECIAL_TOKENS - 2

    def model_problems(self, max_positions: int | None, where: str) -> list[str]:
        """Windows longer than the model's position embeddings would fail deep inside the forward pass."""
        if max_positions is not None and self.max_length > max_positions:
            return [f"--max-length {self.max_length} is longer than {where} accepts ({max_positions} positions)"]
        return []


@dataclass
class DecodeSettings:
    """How the logits of an example's windows become its answer."""

    n_best: int = setting(
        20,
        "start and end positions searched per window; the n-best list holds the best this many spans",
        run_qa=("--n_best_size",),
    )
    max_answer_length: int = setting(30, "longest answer, in tokens", run_qa=("--max_answer_length",))
    null_threshold: float | None = setting(
        None,
        "SQuAD v2: no answer when null score - best span score exceeds this (evaluate.py, predict.py: default "
        "the threshold stored with the model, and a model without one always answers; train.py: stored instead "
        "of the one each evaluation tunes)",
        run_qa=("--null_score_diff_threshold",),
    )

    def problems(self) -> list[str]:
        found = []
        if self.null_threshold is not None and not math.isfinite(self.null_threshold):
            found.append(f"--null-threshold must be a finite number, got {self.null_threshold}")
        if self.n_best <= 0:
            found.append(f"--n-best must be > 0, got {self.n_best}")
        if self.max_answer_length <= 0:
            found.append(f"--max-answer-length must be > 0, got {self.max_answer_length}")
        return found


class Problems(list):
    """Collects every bad value of a configuration, so one error can list them all."""

    def need(self, condition: bool, message: str) -> None:
        if not condition:
            self.append(message)

    def positive(self, owner: Any, *names: str, optional: bool = False) -> None:
        for name in names:
            value = getattr(owner, name)
            if optional and value is None:
                continue
            self.need(value > 0, f"{flag(name)} must be > 0, got {value}")

    def finite(self, owner: Any, *names: str) -> None:
        for name in names:
            value = getattr(owner, name)
            self.need(value is None or math.isfinite(value), f"{flag(name)} must be a finite number, got {value}")


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise QAError("; ".join(problems))


def file_problems(owner: Any, *names: str) -> list[str]:
    """The files named by these fields (a path or a list of paths) that do not exist."""
    found = []
    for name in names:
        value = getattr(owner, name)
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not Path(path).is_file():
                found.append(f"{flag(name)} {path}: no such file")
    return found


# Settings that several commands take, each defined once here.
def precision_setting(**extra: Any) -> Any:
    return setting(
        "auto", PRECISION_HELP, choices=PRECISIONS, run_qa_switches={"--fp16": "fp16", "--bf16": "bf16"}, **extra
    )


def version_2_setting(what: str) -> Any:
    """train.py's and evaluate.py's --version-2-with-negative: ``what`` it does besides."""
    return setting(
        False,
        f"SQuAD v2.0: {what} even when the data holds no unanswerable question (data that holds one is always "
        "scored so)",
        run_qa=("--version_2_with_negative",),
    )


def inference_batch_setting() -> Any:
    return setting(
        None, f"windows per forward pass (per device) {BATCH_DEFAULT}", run_qa=("--per_device_eval_batch_size",)
    )


# Tokens (padded) in one forward pass: at the default windows (384) the batch sizes bind first; at a
# long model's length (ModernBERT 8192) this does, so memory stays bounded whatever the window length.
DEFAULT_BATCH_TOKENS = 32_768


def batch_tokens_setting(what: str) -> Any:
    return setting(
        DEFAULT_BATCH_TOKENS,
        f"at most this many tokens (windows x padded length) in one forward pass{what}: long windows make "
        "smaller batches",
    )


def checkpoint_setting(group: str) -> Any:
    """evaluate.py's and predict.py's --ckpt: a train.py output directory (its default) or a hub id."""
    return setting(
        DEFAULT_OUTPUT_DIR,
        "checkpoint directory (train.py output) or hub id",
        group=group,
        checkpoint=True,
        run_qa=("--model_name_or_path",),
    )
