"""What `python train.py` can be told: `TrainConfig`, made of one dataclass per group of flags.

Each group (data, optimisation, hardware, output, evaluation during training, distillation) is a
dataclass of its own with its own validity rules; `TrainConfig` inherits them all, so a setting is
read as ``config.lr`` and ``training_args.json`` stays one flat object (with ``window`` and
``decode`` nested). Files named by flags are checked apart (`file_problems`), after the values.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qa.config.settings import (
    BATCH_DEFAULT,
    PRECISIONS,
    DecodeSettings,
    Problems,
    WindowSettings,
    batch_tokens_setting,
    file_problems,
    flag,
    precision_setting,
    setting,
    version_2_setting,
)
from qa.files import DEFAULT_OUTPUT_DIR

EVAL_STRATEGIES = ("no", "steps", "epoch")
METRICS_FOR_BEST_MODEL = ("f1", "exact_match")
# Where train.py's metrics go besides train_log.jsonl (always written); "all": every back-end listed.
REPORT_TO = ("none", "tensorboard", "mlflow", "all")
# The package each back-end needs (optional: not in requirements.txt)
REPORT_TO_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


@dataclass
class TrainData:
    """The model to start from and the data to train and validate on."""

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
    version_2_with_negative: bool = version_2_setting("score by the v2.0 rules")
    window: WindowSettings = setting(WindowSettings)
    cache_dir: str | None = setting(None, "tokenised-window cache (default: $QA_CACHE_DIR or ~/.cache/qa-squad)")
    distractors: int = setting(
        0,
        "train every question with K other paragraphs of its article as well, under one softmax shared by all "
        "its windows (Clark and Gardner, 2018), so that scores compare across passages; 0: off",
    )

    @property
    def has_validation_data(self) -> bool:
        """A --validation-file, or the hub dataset's validation split (used when no --train-file is given)."""
        return self.validation_file is not None or self.train_file is None

    def data_problems(self) -> Problems:
        problems = Problems(self.window.problems())
        problems.positive(self, "max_train_samples", "max_eval_samples", optional=True)
        problems.need(self.distractors >= 0, f"--distractors must be >= 0, got {self.distractors}")
        return problems


@dataclass
class Optimisation:
    """AdamW, the linear schedule and the batches."""

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
    max_batch_tokens: int = batch_tokens_setting(
        " (training: a micro-batch over it is run in parts whose gradients add up to the same step; "
        "evaluations: smaller batches)"
    )
    max_grad_norm: float = setting(1.0, "clip gradients to this norm; 0: off", run_qa=("--max_grad_norm",))
    seed: int = setting(42, "seeds shuffling and dropout")
    group_by_length: bool = setting(True, "batches of windows of similar length (less padding)")

    def optimisation_problems(self) -> Problems:
        problems = Problems()
        problems.finite(self, "lr", "epochs", "weight_decay", "warmup_ratio", "max_grad_norm")
        problems.positive(self, "lr", "epochs", "batch_size", "grad_accum", "max_batch_tokens")
        problems.positive(self, "max_steps", optional=True)
        problems.need(self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}")
        problems.need(0 <= self.warmup_ratio < 1, f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        problems.need(self.max_grad_norm >= 0, f"--max-grad-norm must be >= 0, got {self.max_grad_norm}")
        problems.need(0 <= self.seed < 2**32, f"--seed must be in [0, 2**32), got {self.seed}")
        return problems


@dataclass
class Hardware:
    """Precision and data loading."""

    precision: str = precision_setting(group="hardware")
    num_workers: int = setting(0, "DataLoader worker processes", run_qa=("--dataloader_num_workers",))

    def hardware_problems(self) -> Problems:
        problems = Problems()
        problems.need(self.num_workers >= 0, f"--num-workers must be >= 0, got {self.num_workers}")
        problems.need(self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}")
        return problems


@dataclass
class Output:
    """The output directory, checkpoints, logs and resuming."""

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

    def output_problems(self) -> Problems:
        problems = Problems()
        problems.positive(self, "log_steps")
        problems.positive(self, "save_steps", "save_total_limit", optional=True)
        problems.need(
            not (self.resume and self.overwrite_output_dir), "--resume and --overwrite-output-dir contradict each other"
        )
        output = Path(self.output_dir)
        problems.need(not output.exists() or output.is_dir(), f"--output-dir {output} is a file, not a directory")
        return problems


@dataclass
class EvalDuringTraining:
    """When to evaluate, what "best" means, early stopping, and where the metrics go."""

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
        "where the metrics (loss, learning rate, gradient norm, windows/s, every evaluation) go besides "
        "OUTPUT_DIR/train_log.jsonl. tensorboard: event files under OUTPUT_DIR/runs (pip install tensorboard); "
        "mlflow: a run in MLflow's tracking store (MLFLOW_TRACKING_URI, else MLflow's local default; the "
        "experiment MLFLOW_EXPERIMENT_NAME, else squad-qa; pip install mlflow); all: both",
        choices=REPORT_TO,
        run_qa=("--report_to",),
        run_qa_switches={"--with_tracking": "tensorboard"},
    )

    @property
    def metric_backends(self) -> list[str]:
        """--report-to resolved to the back-ends it names (besides train_log.jsonl, always written)."""
        if self.report_to == "all":
            return list(REPORT_TO_PACKAGES)
        return [self.report_to] if self.report_to in REPORT_TO_PACKAGES else []


@dataclass
class Distillation:
    """A teacher's soft targets and a smaller student."""

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

    def distillation_problems(self) -> Problems:
        problems = Problems()
        problems.positive(self, "student_layers", optional=True)
        problems.finite(self, "distill_alpha", "distill_temperature")
        problems.need(0 <= self.distill_alpha <= 1, f"--distill-alpha must be in [0, 1], got {self.distill_alpha}")
        problems.positive(self, "distill_temperature")
        return problems


# dataclasses collect the fields of the bases last-first: the groups appear (in --help too) from TrainData on.
@dataclass
class TrainConfig(Distillation, EvalDuringTraining, Output, Hardware, Optimisation, TrainData):
    """Everything `python train.py` can be told; defaults reproduce the reference recipe."""

    # run_qa.py switches that train.py implies: accepted so that an existing command line runs
    RUN_QA_NO_OPS = {"--do_train": "train.py always trains"}  # not a field: no annotation

    @property
    def evaluation_schedule(self) -> str:
        """--eval-strategy resolved: its default follows the validation data and --no-eval, and
        --eval-steps N alone means steps (as `Trainer` users expect), never an ignored flag."""
        if not self.eval or not self.has_validation_data:
            return "no"
        return self.eval_strategy or ("steps" if self.eval_steps is not None else "epoch")

    @staticmethod
    def settings_cleared_by(name: str, value: Any) -> tuple[str, ...]:
        """Settings of a --config file that a flag given on the command line clears, because they would
        override what the flag says (a replayed max_steps against --epochs) or contradict it."""
        if name == "epochs":
            return ("max_steps",)
        if name == "eval_strategy" and value != "steps":
            return ("eval_steps",)
        if name == "eval" and value is False:  # --no-eval
            return ("eval_strategy", "eval_steps", "early_stopping_patience")
        return ()

    def problems(self) -> list[str]:
        return [
            *self.data_problems(),
            *self.optimisation_problems(),
            *self.hardware_problems(),
            *self.output_problems(),
            *self.evaluation_problems(),
            *self.distillation_problems(),
        ]

    def evaluation_problems(self) -> Problems:
        problems = Problems(self.decode.problems())
        problems.positive(self, "eval_batch_size", "eval_steps", "early_stopping_patience", optional=True)
        for backend in self.metric_backends:
            package = REPORT_TO_PACKAGES[backend]
            problems.need(
                importlib.util.find_spec(package) is not None,
                f"--report-to {self.report_to} needs the {package} package: pip install {package}",
            )
        problems.finite(self, "early_stopping_threshold")
        problems.need(self.early_stopping_threshold >= 0, "--early-stopping-threshold must be >= 0")
        schedule = self.evaluation_schedule
        reason = "--no-eval" if not self.eval else "no validation data (give --validation-file)"
        if self.eval_strategy in ("steps", "epoch") and schedule == "no":
            problems.append(f"--eval-strategy {self.eval_strategy} needs validation data to evaluate on: {reason}")
        elif self.eval_steps is not None and schedule == "no":
            problems.append(f"--eval-steps needs validation data to evaluate on: {reason}")
        problems.need(schedule != "steps" or self.eval_steps is not None, "--eval-strategy steps needs --eval-steps N")
        problems.need(
            self.eval_steps is None or self.eval_strategy in (None, "steps"),
            f"--eval-steps applies to --eval-strategy steps, not {self.eval_strategy}",
        )
        problems.need(
            self.early_stopping_patience is None or schedule != "no",
            "--early-stopping-patience needs evaluations during training (--eval-strategy steps or epoch)",
        )
        return problems

    def file_problems(self) -> list[str]:
        return file_problems(self, "train_file", "validation_file")

    def flag_problems(self, given: set[str]) -> list[str]:
        """Distillation settings without a teacher would be ignored: refused instead."""
        unused = [flag(name) for name in ("distill_alpha", "distill_temperature") if name in given]
        if unused and self.teacher is None:
            return [f"{', '.join(unused)} only apply with --teacher"]
        if self.distractors and self.teacher is not None:
            return ["--distractors and --teacher cannot be combined (the shared softmax has no distillation loss)"]
        return []

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
