"""The SQuAD v2 null threshold that belongs to a model's weights, the one way it is set and read.

A model abstains when its null score beats the best span by more than the threshold tuned on
validation data. It is stored in ``config.json`` (``qa_null_threshold``, readable with
`AutoConfig`): on the loaded config before a save, or in a saved directory's ``config.json``
after one; both go through `set_null_threshold`, which sets or removes the key.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from qa.config.settings import DecodeSettings
from qa.files import NULL_THRESHOLD_KEY, directory_lock, read_json_object, write_json


def set_null_threshold(model_config: Any, threshold: float | None) -> None:
    """The threshold a model config (a transformers config, or the dict of a config.json) carries (None: none)."""
    set_config_entry(model_config, NULL_THRESHOLD_KEY, threshold)


def set_config_entry(model_config: Any, key: str, value: Any) -> None:
    """Set (None: remove) one key this tool keeps in a model config, loaded or as a config.json dict."""
    values = model_config if isinstance(model_config, dict) else vars(model_config)
    if value is not None:
        values[key] = value
    else:
        values.pop(key, None)


def store_null_threshold(model_dir: Path, threshold: float | None) -> None:
    """Set the threshold in a saved model's config.json, atomically."""
    store_config_entry(model_dir, NULL_THRESHOLD_KEY, threshold)


def store_config_entry(model_dir: Path, key: str, value: Any) -> None:
    """Set (None: remove) one key of a saved model's config.json, atomically: what this tool stores with
    the weights (the null threshold, the calibrator) goes in this one way."""
    path = model_dir / "config.json"
    with directory_lock(model_dir):  # another storer's entry, written meanwhile, is kept
        config = read_json_object(path, "the model configuration")
        set_config_entry(config, key, value)
        write_json(path, config, sort_keys=True)


def stored_null_threshold(model: Any) -> float | None:
    return getattr(model.config, NULL_THRESHOLD_KEY, None)


def forget_null_threshold(model: Any) -> float | None:
    """Drop the threshold a model carries, returning it: a threshold belongs to the weights it was tuned
    for, and a model fine-tuned further must not inherit it (on v1.1 data it would make the new model
    abstain). Only a run's own evaluation stores one."""
    inherited = stored_null_threshold(model)
    set_null_threshold(model.config, None)
    return inherited


def with_stored_threshold(decode: DecodeSettings, model: Any) -> DecodeSettings:
    """``--null-threshold`` when given, else the one train.py stored in the model's config (or none)."""
    if decode.null_threshold is not None:
        return decode
    return replace(decode, null_threshold=stored_null_threshold(model))
