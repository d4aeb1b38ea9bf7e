"""What a model's weights carry besides themselves, owned here: the SQuAD v2 null threshold tuned for
them and the calibrator of their scores. Both belong to the weights they were fitted on, so they are

- read from a model's config (`Carried.of`) and applied at inference (`with_stored_threshold`; the
  calibrator's dict is read by `qa.eval.calibration.Calibrator.from_dict`),
- dropped when the weights are fine-tuned further (`drop_carried`: only the run's own evaluations set
  them again),
- attached to the config of each evaluation's checkpoint just before it is saved and removed after
  (`Carried.attach`), so the best checkpoint, promoted whole, carries its own,
- stored into a saved model's config.json (`store_carried`: read-modify-write under a lock, written
  atomically).

They live in ``config.json`` under ``qa_null_threshold`` and ``qa_calibration``, so `AutoConfig` users
see them too. No other module names those keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from qa.config.settings import DecodeSettings
from qa.errors import QAError
from qa.files import directory_lock, read_json_object, write_json

NULL_THRESHOLD_KEY = "qa_null_threshold"
CALIBRATION_KEY = "qa_calibration"
_KEYS = {"null_threshold": NULL_THRESHOLD_KEY, "calibration": CALIBRATION_KEY}


@dataclass
class Carried:
    null_threshold: float | None = None
    calibration: dict[str, Any] | None = None  # a calibrator as `qa.eval.calibration.Calibrator.to_dict` gives it

    @classmethod
    def of(cls, model_config: Any) -> Carried:
        """What a model config carries (a transformers config, or the dict of a config.json)."""
        values = model_config if isinstance(model_config, dict) else vars(model_config)
        return cls(**{name: values.get(key) for name, key in _KEYS.items()})

    def attach(self, model_config: Any) -> None:
        """Make a model config carry exactly these (None: not that entry)."""
        values = model_config if isinstance(model_config, dict) else vars(model_config)
        for name, key in _KEYS.items():
            value = getattr(self, name)
            if value is not None:
                values[key] = value
            else:
                values.pop(key, None)

    @property
    def empty(self) -> bool:
        return all(getattr(self, item.name) is None for item in fields(self))


def drop_carried(model_config: Any) -> Carried:
    """Remove what a model config carries, returning it: weights fine-tuned further must not inherit a
    threshold (on v1.1 data it would make the new model abstain) or a calibrator fitted for others."""
    inherited = Carried.of(model_config)
    Carried().attach(model_config)
    return inherited


def store_carried(model_dir: Path, **changes: Any) -> None:
    """Set (None: remove) the named entries (``null_threshold``, ``calibration``) in a saved model's
    config.json, keeping the others: read-modify-write under a lock on the directory, so that another
    process's change between the read and the write is not lost, and written atomically."""
    path = model_dir / "config.json"
    with directory_lock(model_dir):
        config = read_json_object(path, "the model configuration")
        replace(Carried.of(config), **changes).attach(config)
        write_json(path, config, sort_keys=True)


def with_stored_threshold(decode: DecodeSettings, model: Any) -> DecodeSettings:
    """``--null-threshold`` when given, else the one the model carries (or none); a stored value that is
    not a finite number (a hand-edited config.json) is refused in one line."""
    if decode.null_threshold is not None:
        return decode
    stored = Carried.of(model.config).null_threshold
    if stored is not None and (
        isinstance(stored, bool) or not isinstance(stored, int | float) or not math.isfinite(stored)
    ):
        raise QAError(
            f"config.json {NULL_THRESHOLD_KEY}: {stored!r} is not a finite number; fix it, remove it, or override it "
            "with --null-threshold"
        )
    return replace(decode, null_threshold=None if stored is None else float(stored))
