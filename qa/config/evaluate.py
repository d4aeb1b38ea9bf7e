"""What `python evaluate.py` can be told."""

from __future__ import annotations

from dataclasses import dataclass

from qa.config.settings import (
    DecodeSettings,
    Problems,
    WindowSettings,
    batch_tokens_setting,
    checkpoint_setting,
    file_problems,
    inference_batch_setting,
    precision_setting,
    setting,
    version_2_setting,
)


@dataclass
class EvaluateConfig:
    """Everything `python evaluate.py` can be told."""

    ckpt: str = checkpoint_setting("model")
    precision: str = precision_setting()
    dataset: str = setting("squad", "hub dataset name", group="data", run_qa=("--dataset_name",))
    split: str = setting("validation", "hub dataset split")
    validation_file: str | None = setting(
        None, "local SQuAD JSON / JSON lines / CSV / Parquet file instead of the hub", run_qa=("--validation_file",)
    )
    max_eval_samples: int | None = setting(None, "evaluate the first N examples only", run_qa=("--max_eval_samples",))
    version_2_with_negative: bool = version_2_setting("score by the v2.0 rules")
    window: WindowSettings = setting(WindowSettings, group="windows and decoding", as_trained=True)
    decode: DecodeSettings = setting(DecodeSettings)
    batch_size: int | None = inference_batch_setting()
    max_batch_tokens: int = batch_tokens_setting("")
    output_dir: str | None = setting(
        None, "where to write the result files (default: the checkpoint)", group="output", run_qa=("--output_dir",)
    )
    save_nbest: bool = setting(False, "also write nbest_predictions.json")
    distractors: int | None = setting(
        None,
        "read each question with K other paragraphs of its article (seeded) and score the answers across "
        "them, with how often the right paragraph was chosen",
    )
    report: str = setting(
        "all",
        "report.json and report.html: where the model fails (slices, calibration, confident errors); none: off",
        choices=("all", "none"),
    )
    calibrate: bool = setting(
        False,
        "fit the calibrator of the answers' scores on this data and store it in the checkpoint's config.json "
        "(needs a local checkpoint and at least 200 answered questions)",
    )
    progress: bool = setting(True, "progress bars")

    def problems(self) -> list[str]:
        problems = Problems(self.window.problems() + self.decode.problems())
        problems.positive(self, "batch_size", "max_eval_samples", "distractors", optional=True)
        problems.positive(self, "max_batch_tokens")
        problems.need(
            self.distractors is None or not self.calibrate,
            "--calibrate fits on single passages: not with --distractors",
        )
        problems.need(
            self.distractors is None or not self.save_nbest,
            "--save-nbest lists single passages' spans: not with --distractors",
        )
        return problems

    def file_problems(self) -> list[str]:
        return file_problems(self, "validation_file")
