"""Which evaluation of a run is the best, and when to stop a run that no longer improves.

Pure bookkeeping over the evaluations of one run, saved in every checkpoint so that a
resumed run ends with the same best step and the same history as an uninterrupted one.
The rules are `Trainer`'s: the best model is the evaluation with the strictly highest
metric (the first of equal ones); early stopping counts evaluations that did not beat
the best by more than the threshold, and stops when the count reaches the patience.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from qa.errors import QAError


def metric_value(metrics: dict[str, Any], name: str) -> float:
    """``f1`` or ``exact_match`` of one evaluation's metrics, for SQuAD v1.1 and v2.0 keys alike.

    On v2.0 data these are the scores at the null threshold the evaluation used, which in training
    is the one it tuned: the model selected is the one that is best with its own threshold.
    """
    if name == "exact_match":
        return float(metrics["exact_match"] if "exact_match" in metrics else metrics["exact"])
    return float(metrics[name])


@dataclass
class BestModel:
    """The evaluations of a run so far, the best one, and how many since it stopped improving."""

    metric: str = "f1"
    patience: int | None = None  # None: never stop early
    threshold: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # {"step", "epoch", "value", ...} per evaluation
    best_step: int | None = None
    best_value: float | None = None
    without_improvement: int = 0

    def record(self, step: int, epoch: float, metrics: dict[str, Any]) -> bool:
        """Add one evaluation; True when it is the new best."""
        value = metric_value(metrics, self.metric)
        self.history.append({"step": step, "epoch": epoch, "value": value, **_summary(metrics)})
        improved_enough = self.best_value is None or value - self.best_value > self.threshold
        self.without_improvement = 0 if improved_enough else self.without_improvement + 1
        if self.best_value is None or value > self.best_value:
            self.best_step, self.best_value = step, value
            return True
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.without_improvement >= self.patience

    @property
    def last_step(self) -> int | None:
        return self.history[-1]["step"] if self.history else None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the record of a resumed run. The settings that decide selection must be those the run
        began with: another metric would compare values of two metrics, another patience or threshold
        would stop where the uninterrupted run does not (checkpoints of older versions lack them)."""
        changed = [
            f"{flag} {mine} (the run began with {state[key]})"
            for key, flag, mine in (
                ("metric", "--metric-for-best-model", self.metric),
                ("patience", "--early-stopping-patience", self.patience),
                ("threshold", "--early-stopping-threshold", self.threshold),
            )
            if key in state and state[key] != mine
        ]
        if changed:
            raise QAError(
                f"{'; '.join(changed)}: a resumed run keeps the settings that select its best model and stop it "
                "early; give the values it began with, or start a new run"
            )
        self.history = list(state["history"])
        self.best_step, self.best_value = state["best_step"], state["best_value"]
        self.without_improvement = state["without_improvement"]


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures of an evaluation worth a line of history (v1.1 or v2.0 keys)."""
    keys = ("exact_match", "exact", "f1", "HasAns_f1", "NoAns_f1", "null_threshold", "best_null_threshold_f1")
    return {key: metrics[key] for key in keys if key in metrics}
