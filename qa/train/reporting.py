"""What a training run tells as it goes: messages on stderr, the progress bar and its metric records
(``train_log.jsonl``, and TensorBoard or MLflow when asked for: `qa.train.metric_logging`).

Only rank 0 reports. Step losses and gradient norms stay on the device and are read back once
per logging interval (`StepMeter`), so reporting never makes the loop wait for the device.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from qa.errors import QAError
from qa.files import LOG_FILE
from qa.runtime.device import Runtime
from qa.train.checkpoint import list_checkpoints
from qa.train.metric_logging import MetricLogger


class StepMeter:
    """Each step's loss and gradient norm (before clipping), kept on the device; read back (one sync)
    once per logging interval as the interval's means, stopping the run, with its step, at the first
    non-finite loss."""

    def __init__(self, log_steps: int, runtime: Runtime) -> None:
        self.runtime = runtime
        self.buffer = torch.zeros(log_steps, 2, device=runtime.device)
        self.count = 0

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> None:
        self.buffer[self.count, 0] = loss
        self.buffer[self.count, 1] = grad_norm if grad_norm is not None else float("nan")
        self.count += 1

    def read(self, step: int, output_dir: Path) -> tuple[float, float] | None:
        """The mean loss and gradient norm since the last read (None if no step since), after `check`."""
        host = self.check(step, output_dir)
        self.count = 0
        if not host:
            return None
        return sum(row[0] for row in host) / len(host), sum(row[1] for row in host) / len(host)

    def check(self, step: int, output_dir: Path) -> list[list[float]]:
        """The interval's [loss, grad norm] rows on the host; a non-finite loss stops the run with its step."""
        if self.count == 0:
            return []
        values = self.buffer[: self.count].clone()
        if self.runtime.distributed:
            torch.distributed.all_reduce(values)
            values /= self.runtime.world_size
        host = values.tolist()
        first_step = step - self.count + 1
        for offset, (loss, _) in enumerate(host):
            if not math.isfinite(loss):
                kept = list_checkpoints(output_dir)
                raise QAError(
                    f"loss became {loss} at step {first_step + offset}; stopped without saving. Last good "
                    f"checkpoint: {kept[-1] if kept else 'none'}; try a lower --lr or --precision fp32"
                )
        return host


class RunLog:
    """Messages on stderr and the metric records of every back-end (`qa.train.metric_logging`), from rank 0
    only; the clock of the run's training time (evaluations left out)."""

    def __init__(self, runtime: Runtime, loggers: list[MetricLogger]) -> None:
        self.enabled = runtime.is_main
        self.loggers = loggers if runtime.is_main else []
        self.began = time.perf_counter()
        self.windows_seen = 0
        self.paused_seconds = 0.0  # evaluations: not training time

    def start(self, resumed_at: int | None) -> None:
        """Begin (or continue) the record. On a resume, what was logged after the checkpoint is dropped
        where the back-end allows: those steps run again."""
        self.began = time.perf_counter()
        for logger in self.loggers:
            logger.start(resumed_at)

    @property
    def training_seconds(self) -> float:
        return time.perf_counter() - self.began - self.paused_seconds

    def say(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def record_interval(
        self, means: tuple[float, float] | None, step: int, epoch: float, learning_rate: float, bar: Any
    ) -> None:
        if not self.enabled or means is None:
            return
        loss, grad_norm = means
        windows_per_s = self.windows_seen / max(self.training_seconds, 1e-9)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{learning_rate:.2e}", win_s=f"{windows_per_s:.1f}")
        self._log(
            {
                "step": step,
                "epoch": round(epoch, 4),
                "loss": loss,  # mean over the steps since the previous record
                "grad_norm": grad_norm if math.isfinite(grad_norm) else None,  # mean, before clipping
                "lr": learning_rate,
                "windows_per_s": round(windows_per_s, 2),
                "elapsed_s": round(time.perf_counter() - self.began, 2),
            }
        )

    def record_evaluation(self, step: int, epoch: float, summary: dict[str, Any], seconds: float, bar: Any) -> None:
        if not self.enabled:
            return
        scores = {key: value for key, value in summary.items() if key not in ("step", "epoch", "value")}
        self._log(
            {
                "step": step,
                "epoch": round(epoch, 4),
                **{f"eval_{k}": v for k, v in scores.items()},
                "eval_seconds": round(seconds, 2),
            }
        )
        bar.set_postfix(f1=f"{scores['f1']:.2f}", step=step, refresh=False)

    def attach(self, files: list[Path]) -> None:
        """Hand the run's records for people (card, metrics.json, report) to every back-end."""
        for logger in self.loggers:
            logger.attach(files)

    def close(self, ending: str = "FINISHED") -> None:
        """Close every back-end; ``ending`` says how the run ended (`qa.train.metric_logging.ENDINGS`)."""
        for logger in self.loggers:
            logger.close(ending)

    def _log(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(record)


def read_log(output_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's train_log.jsonl (none when there is no log)."""
    path = output_dir / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
