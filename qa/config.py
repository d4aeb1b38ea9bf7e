"""What each command can be told: one dataclass per command, its fields are its flags.

`qa.cli` turns the fields into argparse flags (help from the field metadata) and
every command validates the same way: ``problems()`` lists every bad value and
one `QAError` reports them together, before any work starts.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from qa.errors import QAError
from qa.settings import PRECISIONS, DecodeSettings, Problems, WindowSettings, flag, setting

EVAL_STRATEGIES = ("no", "steps", "epoch")
METRICS_FOR_BEST_MODEL = ("f1", "exact_match")
REPORT_TO = ("none", "tensorboard")

DEFAULT_OUTPUT_DIR = "finetuned-squad"
BATCH_DEFAULT = "(default: 8 on CPU, 64 on GPU)"
PRECISION_HELP = (
    "autocast dtype. CUDA: auto = bf16 where supported, else fp16 with a GradScaler. "
    "CPU: auto = fp32; bf16 runs CPU autocast"
)


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise QAError("; ".join(problems))


def _file_problems(problems: Problems, owner: Any, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not Path(path).is_file():
                problems.append(f"{flag(name)} {path}: no such file")


@dataclass
class TrainConfig:
    """Everything `python train.py` can be told; defaults reproduce the reference recipe."""

    # run_qa.py switches that train.py implies: accepted so that an existing command line runs
    RUN_QA_NO_OPS = {"--do_train": "train.py always trains"}  # not a field: no annotation

    # model and data
    model: str = setting(
        "distilbert-base-cased",
        "hub id or local model directory",
        group="model and data",
        run_qa=("--model_name_or_path",),
    )
    dataset: str = setting(
        "squad",
        "hub dataset, used when no --train-file is given (train and validation splits)",
        run_qa=("--dataset_name",),
    )
    train_file: list[str] | None = setting(
        None,
        "local SQuAD JSON / JSON lines / CSV / Parquet training file(s); several train on their union",
        nargs="+",
        run_qa=("--train_file",),
    )
    validation_file: str | None = setting(
        None, "local validation file (evaluated during and after training)", run_qa=("--validation_file",)
    )
    max_train_samples: int | None = setting(None, "train on the first N examples", run_qa=("--max_train_samples",))
    max_eval_samples: int | None = setting(None, "evaluate on the first N examples", run_qa=("--max_eval_samples",))
    version_2_with_negative: bool = setting(
        False,
        "SQuAD v2.0: score by the v2.0 rules and store the F1-best null threshold even when the validation data "
        "holds no unanswerable question (data that holds one is always scored so)",
        run_qa=("--version_2_with_negative",),
    )
    window: WindowSettings = setting(WindowSettings)
    cache_dir: str | None = setting(None, "tokenised-window cache (default: $QA_CACHE_DIR or ~/.cache/qa-squad)")
    # optimisation
    epochs: float = setting(
        3.0, "passes over the training windows", group="optimisation", run_qa=("--num_train_epochs",)
    )
    max_steps: int | None = setting(
        None, "optimizer steps to run; overrides --epochs", run_qa=("--max_train_steps", "--max_steps")
    )
    lr: float = setting(2e-5, "peak learning rate (AdamW)", run_qa=("--learning_rate",))
    weight_decay: float = setting(
        0.01, "AdamW weight decay (not on biases and LayerNorm weights)", run_qa=("--weight_decay",)
    )
    warmup_ratio: float = setting(
        0.0, "fraction of steps with linear warmup; then linear decay to 0", run_qa=("--warmup_ratio",)
    )
    batch_size: int = setting(
        16,
        "training windows per device per micro-batch (global = this x devices x accum)",
        run_qa=("--per_device_train_batch_size",),
    )
    grad_accum: int = setting(1, "micro-batches per optimizer step", run_qa=("--gradient_accumulation_steps",))
    max_grad_norm: float = setting(1.0, "clip gradients to this norm; 0: off", run_qa=("--max_grad_norm",))
    seed: int = setting(42, "seeds shuffling and dropout")
    group_by_length: bool = setting(True, "batches of windows of similar length (less padding)")
    # hardware
    precision: str = setting(
        "auto",
        PRECISION_HELP,
        choices=PRECISIONS,
        group="hardware",
        run_qa_switches={"--fp16": "fp16", "--bf16": "bf16"},
    )
    num_workers: int = setting(0, "DataLoader worker processes", run_qa=("--dataloader_num_workers",))
    # output, checkpoints and evaluation
    output_dir: str = setting(
        DEFAULT_OUTPUT_DIR,
        "final model, checkpoints, logs, metrics",
        group="output, checkpoints and evaluation",
        run_qa=("--output_dir",),
    )
    overwrite_output_dir: bool = setting(
        False,
        "start clean in an output directory that holds an earlier run",
        run_qa=("--overwrite_output_dir",),
        replayed=False,
    )
    save_steps: int | None = setting(None, "also checkpoint every N optimizer steps", run_qa=("--save_steps",))
    epoch_checkpoints: bool = setting(True, "checkpoint at the end of every epoch")
    save_total_limit: int | None = setting(
        None, "keep only the newest N checkpoints (never the best one)", run_qa=("--save_total_limit",)
    )
    resume: str | None = setting(
        None,
        "continue from the latest checkpoint in --output-dir, or from the one given",
        nargs="?",
        const="latest",
        run_qa=("--resume_from_checkpoint",),
        replayed=False,
    )
    log_steps: int = setting(
        10, "write train_log.jsonl (mean loss of the interval) every N steps", run_qa=("--logging_steps",)
    )
    progress: bool = setting(True, "progress bars")
    # evaluation during training
    eval: bool = setting(
        True,
        "evaluate on the validation data (during training as --eval-strategy says, and the final model)",
        group="evaluation during training and the best model",
        run_qa_switches={"--do_eval": True},
    )
    eval_strategy: str | None = setting(
        None,
        "when to evaluate during training: no, steps (every --eval-steps) or epoch; each evaluation writes "
        "checkpoint-STEP with its result files (default: epoch when there is validation data, else no)",
        choices=EVAL_STRATEGIES,
        run_qa=("--eval_strategy", "--evaluation_strategy"),
    )
    eval_steps: int | None = setting(None, "evaluate every N optimizer steps", run_qa=("--eval_steps",))
    eval_batch_size: int | None = setting(
        None,
        f"windows per forward pass in the evaluations {BATCH_DEFAULT}",
        run_qa=("--per_device_eval_batch_size",),
    )
    decode: DecodeSettings = setting(DecodeSettings)
    metric_for_best_model: str = setting(
        "f1",
        "what 'best' means (SQuAD v2 data: the score at the null threshold that evaluation tuned)",
        choices=METRICS_FOR_BEST_MODEL,
        run_qa=("--metric_for_best_model",),
    )
    load_best_model_at_end: bool = setting(
        True,
        "the final model is the best evaluation's weights, with its null threshold (when evaluating during training)",
        run_qa_switches={"--load_best_model_at_end": True},
    )
    early_stopping_patience: int | None = setting(
        None,
        "stop after N evaluations in a row that do not beat the best by more than --early-stopping-threshold",
        run_qa=("--early_stopping_patience",),
    )
    early_stopping_threshold: float = setting(
        0.0, "how much an evaluation must beat the best by to count", run_qa=("--early_stopping_threshold",)
    )
    report_to: str = setting(
        "none",
        "tensorboard: event files under OUTPUT_DIR/runs (loss, learning rate, gradient norm, windows/s, "
        "every evaluation); needs pip install tensorboard",
        choices=REPORT_TO,
        run_qa=("--report_to",),
        run_qa_switches={"--with_tracking": "tensorboard"},
    )
    # distillation
    teacher: str | None = setting(
        None,
        "a fine-tuned QA model (directory or hub id) whose start/end distributions the model also learns from; "
        "it must use the same tokenizer",
        group="distillation: a smaller, faster student",
    )
    distill_alpha: float = setting(0.5, "weight of the teacher's soft targets; the gold span gets 1 - alpha")
    distill_temperature: float = setting(2.0, "softens both distributions; the soft loss is scaled by T^2")
    student_layers: int | None = setting(
        None,
        "start from --model with only N of its transformer layers, evenly spaced, the first and last included "
        "(DistilBERT's initialisation)",
    )

    @property
    def has_validation_data(self) -> bool:
        """A --validation-file, or the hub dataset's validation split (used when no --train-file is given)."""
        return self.validation_file is not None or self.train_file is None

    @property
    def evaluation_schedule(self) -> str:
        """--eval-strategy resolved: its default follows the validation data and --no-eval."""
        if not self.eval or not self.has_validation_data:
            return "no"
        return self.eval_strategy or "epoch"

    def problems(self) -> list[str]:
        problems = Problems(self.window.problems() + self.decode.problems())
        problems.finite(self, "lr", "epochs", "weight_decay", "warmup_ratio", "max_grad_norm")
        problems.positive(self, "lr", "epochs", "batch_size", "grad_accum", "log_steps")
        problems.positive(
            self,
            "max_steps",
            "max_train_samples",
            "max_eval_samples",
            "save_steps",
            "save_total_limit",
            "eval_batch_size",
            optional=True,
        )
        problems.need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        problems.need(0 <= self.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        problems.need(self.max_grad_norm >= 0, f"--max-grad-norm must be >= 0, got {self.max_grad_norm}")
        problems.need(self.num_workers >= 0, f"--num-workers must be >= 0, got {self.num_workers}")
        problems.need(0 <= self.seed < 2**32, f"--seed must be in [0, 2**32), got {self.seed}")
        problems.need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}")
        problems.need(
            not (self.resume and self.overwrite_output_dir), "--resume and --overwrite-output-dir contradict each other"
        )
        problems.need(
            self.report_to != "tensorboard" or importlib.util.find_spec("tensorboard") is not None,
            "--report-to tensorboard needs the tensorboard package: pip install tensorboard",
        )
        problems.positive(self, "eval_steps", "early_stopping_patience", "student_layers", optional=True)
        problems.finite(self, "distill_alpha", "distill_temperature")
        problems.need(0 <= self.distill_alpha <= 1, f"--distill-alpha must be in [0, 1], got {self.distill_alpha}")
        problems.positive(self, "distill_temperature")
        problems.finite(self, "early_stopping_threshold")
        problems.need(self.early_stopping_threshold >= 0, "--early-stopping-threshold must be >= 0")
        schedule = self.evaluation_schedule
        if self.eval_strategy in ("steps", "epoch") and schedule == "no":
            reason = "--no-eval" if not self.eval else "no validation data (give --validation-file)"
            problems.append(f"--eval-strategy {self.eval_strategy} needs validation data to evaluate on: {reason}")
        problems.need(schedule != "steps" or self.eval_steps is not None, "--eval-strategy steps needs --eval-steps N")
        problems.need(
            self.eval_steps is None or self.eval_strategy in (None, "steps"),
            f"--eval-steps applies to --eval-strategy steps, not {self.eval_strategy}",
        )
        problems.need(
            self.early_stopping_patience is None or schedule != "no",
            "--early-stopping-patience needs evaluations during training (--eval-strategy steps or epoch)",
        )
        output = Path(self.output_dir)
        problems.need(not output.exists() or output.is_dir(), f"--output-dir {output} is a file, not a directory")
        _file_problems(problems, self, "train_file", "validation_file")
        return problems

    def flag_problems(self, given: set[str]) -> list[str]:
        """Distillation settings without a teacher would be ignored: refused instead."""
        unused = [flag(name) for name in ("distill_alpha", "distill_temperature") if name in given]
        if unused and self.teacher is None:
            return [f"{', '.join(unused)} only apply with --teacher"]
        return []

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvaluateConfig:
    """Everything `python evaluate.py` can be told."""

    ckpt: str = setting(
        DEFAULT_OUTPUT_DIR,
        "checkpoint directory (train.py output) or hub id",
        group="model",
        checkpoint=True,
        run_qa=("--model_name_or_path",),
    )
    precision: str = setting(
        "auto", PRECISION_HELP, choices=PRECISIONS, run_qa_switches={"--fp16": "fp16", "--bf16": "bf16"}
    )
    dataset: str = setting("squad", "hub dataset name", group="data", run_qa=("--dataset_name",))
    split: str = setting("validation", "hub dataset split")
    validation_file: str | None = setting(
        None, "local SQuAD JSON / JSON lines / CSV / Parquet file instead of the hub", run_qa=("--validation_file",)
    )
    max_eval_samples: int | None = setting(None, "evaluate the first N examples only", run_qa=("--max_eval_samples",))
    version_2_with_negative: bool = setting(
        False,
        "SQuAD v2.0: score by the v2.0 rules even when the data holds no unanswerable question "
        "(data that holds one is always scored so)",
        run_qa=("--version_2_with_negative",),
    )
    window: WindowSettings = setting(WindowSettings, group="windows and decoding", as_trained=True)
    decode: DecodeSettings = setting(DecodeSettings)
    batch_size: int | None = setting(
        None, f"windows per forward pass (per device) {BATCH_DEFAULT}", run_qa=("--per_device_eval_batch_size",)
    )
    output_dir: str | None = setting(
        None, "where to write the result files (default: the checkpoint)", group="output", run_qa=("--output_dir",)
    )
    save_nbest: bool = setting(False, "also write nbest_predictions.json")
    progress: bool = setting(True, "progress bars")

    def problems(self) -> list[str]:
        problems = Problems(self.window.problems() + self.decode.problems())
        problems.positive(self, "batch_size", "max_eval_samples", optional=True)
        _file_problems(problems, self, "validation_file")
        return problems


# PredictConfig fields that only one of predict.py's two modes uses; given to the other, they are refused.
ONE_SHOT = "one-shot"
SERVING = "serving"


@dataclass
class PredictConfig:
    """Everything `python predict.py` can be told."""

    question: str | None = setting(
        None, "the question", group="input (a question with --context or --input)", mode=ONE_SHOT
    )
    context: str | None = setting(None, "the context text", mode=ONE_SHOT)
    context_file: str | None = setting(None, "read the context from this file ('-' for standard input)", mode=ONE_SHOT)
    input: str | None = setting(
        None, 'JSON lines file of {"question", "context", "id"?, "top_k"?} objects', mode=ONE_SHOT
    )
    ckpt: str = setting(
        DEFAULT_OUTPUT_DIR,
        "checkpoint directory (train.py output) or hub id",
        group="model and decoding",
        checkpoint=True,
        run_qa=("--model_name_or_path",),
    )
    top_k: int = setting(1, "how many answers to return (at most --n-best)", mode=ONE_SHOT)
    window: WindowSettings = setting(WindowSettings, as_trained=True)
    decode: DecodeSettings = setting(DecodeSettings)
    batch_size: int | None = setting(
        None, f"windows per forward pass (per device) {BATCH_DEFAULT}", run_qa=("--per_device_eval_batch_size",)
    )
    precision: str = setting(
        "auto", PRECISION_HELP, choices=PRECISIONS, run_qa_switches={"--fp16": "fp16", "--bf16": "bf16"}
    )
    json: bool = setting(
        False, "print JSON: {answer, score, start, end} (a list of them with --top-k > 1)", mode=ONE_SHOT
    )
    serve: bool = setting(False, "serve an HTTP API (POST /answer, GET /health, GET /) instead", group="serving")
    host: str = setting("127.0.0.1", "address to listen on (another than 127.0.0.1 exposes the model)", mode=SERVING)
    port: int = setting(8000, "port to listen on (0: any free port, printed at start)", mode=SERVING)
    max_body_bytes: int = setting(1_000_000, "largest request body; larger ones get 413", mode=SERVING)
    max_context_chars: int = setting(100_000, "longest context of one question; longer ones get 413", mode=SERVING)
    max_queue: int = setting(
        256, "questions waiting or in work before new requests get 503 (Retry-After)", mode=SERVING
    )
    max_batch_questions: int = setting(64, "questions answered together in one batch at most", mode=SERVING)
    batch_wait_ms: float = setting(5.0, "how long a batch waits for more requests once the first arrived", mode=SERVING)
    read_timeout_s: float = setting(
        10.0, "a client must send its request headers, and then its body, within this many seconds", mode=SERVING
    )
    answer_timeout_s: float = setting(
        60.0, "a request not answered within this many seconds gets 503 and its questions are dropped", mode=SERVING
    )

    def problems(self) -> list[str]:
        problems = Problems(self.window.problems() + self.decode.problems())
        problems.positive(self, "top_k")
        problems.positive(self, "batch_size", optional=True)
        problems.positive(self, "max_body_bytes", "max_context_chars", "max_queue", "max_batch_questions")
        problems.finite(self, "batch_wait_ms", "read_timeout_s", "answer_timeout_s")
        problems.positive(self, "read_timeout_s", "answer_timeout_s")
        problems.need(
            0 <= self.batch_wait_ms <= 1000, f"--batch-wait-ms must be in [0, 1000], got {self.batch_wait_ms}"
        )
        problems.need(0 <= self.port <= 65535, f"--port must be in [0, 65535], got {self.port}")
        problems.need(
            self.top_k <= self.decode.n_best, f"--top-k ({self.top_k}) must be at most --n-best ({self.decode.n_best})"
        )
        return problems

    def flag_problems(self, given: set[str]) -> list[str]:
        """Flags of the other mode are refused rather than silently ignored."""
        unused_mode = ONE_SHOT if self.serve else SERVING
        unused = [
            flag(item.name) for item in fields(self) if item.metadata.get("mode") == unused_mode and item.name in given
        ]
        if not unused:
            return []
        if self.serve:
            return [
                f"--serve does not take {', '.join(unused)} (a request carries its own question, context and top_k)"
            ]
        return [f"{', '.join(unused)} only apply with --serve"]
