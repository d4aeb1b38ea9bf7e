"""Where train.py's metrics go: one small protocol and a class per back-end (as torchtune's
``metric_logging``), so a team's tracker is one class here, not an edit of the loop.

Every back-end gets the same records from rank 0: one per logging interval (``step``, ``epoch``, ``loss``,
``grad_norm``, ``lr``, ``windows_per_s``, ``elapsed_s``) and one per evaluation (``step``, ``epoch``, its
scores prefixed ``eval_``, ``eval_seconds``). ``train_log.jsonl`` always holds them (the training curves
and the model card are drawn from it); ``--report-to`` adds TensorBoard, MLflow or both.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from qa.errors import QAError, first_line
from qa.files import (
    LOG_FILE,
    MLFLOW_RUN_FILE,
    TENSORBOARD_DIR,
    json_line,
    read_json_object,
    write_json,
    write_text_atomically,
)

Record = Mapping[str, Any]
# How a run ended, in MLflow's words: done, stopped by an error, stopped by the user (a signal, Ctrl-C).
ENDINGS = ("FINISHED", "FAILED", "KILLED")
MLFLOW_EXPERIMENT = "squad-qa"  # when MLFLOW_EXPERIMENT_NAME does not name one


class MetricLogger(Protocol):
    """One destination of the training metrics."""

    def start(self, resumed_at: int | None) -> None:
        """Open it; on a resume from step ``resumed_at``, what it holds past that step is run again."""

    def log(self, record: Record) -> None:
        """One interval's or one evaluation's record (see the module's description)."""

    def attach(self, files: list[Path]) -> None:
        """The run's records for people (model card, metrics.json, report), once the run has written them."""

    def close(self, ending: str = "FINISHED") -> None:
        """Flush and close; ``ending``: one of `ENDINGS`."""


def scalars(record: Record) -> dict[str, float]:
    """A record as the named scalars of TensorBoard and MLflow: ``train/...`` for an interval, ``eval/...``
    for an evaluation (absent values left out)."""
    if any(key.startswith("eval_") for key in record):
        named = {f"eval/{key.removeprefix('eval_')}": value for key, value in record.items() if key.startswith("eval_")}
    else:
        named = {
            "train/loss": record["loss"],
            "train/learning_rate": record["lr"],
            "train/windows_per_second": record["windows_per_s"],
            "train/grad_norm": record["grad_norm"],
        }
    return {
        name: float(value)
        for name, value in named.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


class JsonLinesLogger:
    """``OUTPUT_DIR/train_log.jsonl``: the run's own record, one JSON object a line."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / LOG_FILE

    def start(self, resumed_at: int | None) -> None:
        if resumed_at is not None and self.path.is_file():  # each step once: drop what runs again
            kept = [
                line for line in self.path.read_text().splitlines() if json.loads(line).get("step", 0) <= resumed_at
            ]
            write_text_atomically(self.path, "".join(line + "\n" for line in kept))

    def log(self, record: Record) -> None:
        with self.path.open("a") as handle:
            handle.write(json_line(dict(record)) + "\n")

    def attach(self, files: list[Path]) -> None:
        pass  # the files are in the output directory already

    def close(self, ending: str = "FINISHED") -> None:
        pass


class TensorBoardLogger:
    """Event files under ``OUTPUT_DIR/runs`` (what the Trainer writes there too)."""

    def __init__(self, output_dir: Path) -> None:
        self.directory = output_dir / TENSORBOARD_DIR
        self.writer: Any = None

    def start(self, resumed_at: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events a killed run wrote past the checkpoint are hidden from TensorBoard; the step of the
        # checkpoint itself was logged before it was saved, so it stays (purge_step hides that step and after).
        purge = resumed_at + 1 if resumed_at is not None else None
        self.writer = SummaryWriter(log_dir=str(self.directory), purge_step=purge)

    def log(self, record: Record) -> None:
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, record["step"])

    def attach(self, files: list[Path]) -> None:
        pass  # the files are in the output directory already

    def close(self, ending: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger:
    """A run in MLflow's tracking store: MLFLOW_TRACKING_URI, else MLflow's own default (a local store in
    the working directory: no server, no network). The run's settings are its parameters; a resumed run
    continues the same MLflow run (its id is kept in ``OUTPUT_DIR/mlflow_run.json``), where the steps run
    again are logged a second time (MLflow keeps every value)."""

    def __init__(self, output_dir: Path, settings: Mapping[str, Any]) -> None:
        self.output_dir = output_dir
        self.settings = settings
        self.run_file = output_dir / MLFLOW_RUN_FILE
        self.mlflow: Any = None

    def start(self, resumed_at: int | None) -> None:
        """A store that cannot be written (a bad URI, a read-only place, a deleted experiment) stops the run
        here, before its first step, in one line."""
        import mlflow

        self.mlflow = mlflow
        try:
            self._start(resumed_at)
        except Exception as error:  # MLflow and its stores raise many types
            self._end_quietly()
            raise QAError(
                f"--report-to mlflow: cannot log to {mlflow.get_tracking_uri()} (experiment {self._experiment()}): "
                f"{first_line(error, 300)}; fix MLFLOW_TRACKING_URI / MLFLOW_EXPERIMENT_NAME or drop --report-to mlflow"
            ) from None

    def _experiment(self) -> str:
        return os.environ.get("MLFLOW_EXPERIMENT_NAME") or MLFLOW_EXPERIMENT

    def _start(self, resumed_at: int | None) -> None:
        mlflow = self.mlflow
        mlflow.set_experiment(self._experiment())
        earlier = read_json_object(self.run_file, "the MLflow run").get("run_id") if self.run_file.is_file() else None
        if resumed_at is not None and isinstance(earlier, str):
            try:
                mlflow.start_run(run_id=earlier)
                self._say_where()
                return
            except mlflow.exceptions.MlflowException:  # another tracking store than the run's first part
                print(
                    f"note: MLflow run {earlier} is not in {mlflow.get_tracking_uri()}; the resumed run logs to a "
                    "new MLflow run",
                    file=sys.stderr,
                )
        run = mlflow.start_run(run_name=self.output_dir.resolve().name)
        write_json(self.run_file, {"run_id": run.info.run_id, "tracking_uri": mlflow.get_tracking_uri()})
        mlflow.log_params(flat_params(self.settings))
        mlflow.set_tag("output_dir", str(self.output_dir.resolve()))
        self._say_where()

    def _say_where(self) -> None:
        active = self.mlflow.active_run()
        print(
            f"MLflow: run {active.info.run_id} in {self.mlflow.get_tracking_uri()} (experiment {self._experiment()})",
            file=sys.stderr,
            flush=True,
        )

    def attach(self, files: list[Path]) -> None:
        self._guarded(lambda: [self.mlflow.log_artifact(str(path)) for path in files if path.is_file()])

    def log(self, record: Record) -> None:
        self._guarded(lambda: self.mlflow.log_metrics(scalars(record), step=record["step"]))

    def close(self, ending: str = "FINISHED") -> None:
        if self.mlflow is not None:
            self._guarded(lambda: self.mlflow.end_run(status=ending))
            self.mlflow = None

    def _guarded(self, call: Any) -> None:
        """A store that fails during the run costs its records, not the training: one warning, then MLflow is
        left alone for the rest of the run (train_log.jsonl keeps every record)."""
        if self.mlflow is None:
            return
        try:
            call()
        except Exception as error:  # MLflow and its stores raise many types
            print(
                f"warning: MLflow stopped logging ({type(error).__name__}: {first_line(error, 300)}); the run goes on, "
                "and train_log.jsonl has every record",
                file=sys.stderr,
                flush=True,
            )
            self._end_quietly()

    def _end_quietly(self) -> None:
        """Leave no MLflow run open in this process after a failure (the store may refuse that too)."""
        if self.mlflow is not None:
            try:
                if self.mlflow.active_run() is not None:
                    self.mlflow.end_run(status="FAILED")
            except Exception:  # the store that failed may fail again: nothing more to do
                pass
        self.mlflow = None


def flat_params(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow parameters: ``window.max_length`` and the like, values as text."""
    flat: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def metric_loggers(output_dir: Path, backends: list[str], settings: Mapping[str, Any]) -> list[MetricLogger]:
    """train_log.jsonl, then each back-end ``--report-to`` names."""
    loggers: list[MetricLogger] = [JsonLinesLogger(output_dir)]
    for backend in backends:
        if backend == "tensorboard":
            loggers.append(TensorBoardLogger(output_dir))
        elif backend == "mlflow":
            loggers.append(MLflowLogger(output_dir, settings))
        else:
            raise ValueError(f"no metric logger named {backend!r}")
    return loggers
