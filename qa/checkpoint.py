"""Checkpoints: one directory per save, written atomically, loadable by `from_pretrained`.

``OUTPUT_DIR/checkpoint-STEP`` holds the model and tokenizer (``save_pretrained``),
``training_args.json`` and ``training_state.pt`` (optimizer, scheduler, scaler,
RNG states and the position in the run). Everything is written into a hidden
temporary directory first and renamed into place, so a crash mid-write never
leaves a directory that looks like a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qa.errors import QAError
from qa.modeling import TRAINING_ARGS_FILE

STATE_FILE = "training_state.pt"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def rng_states() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "rest": list(numpy_state[2:])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(_as_tuples(states["python"]))
    rest = states["numpy"]["rest"]
    np.random.set_state(("MT19937", states["numpy"]["keys"].numpy().astype(np.uint32), *rest))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(item) for item in value) if isinstance(value, list | tuple) else value


def write_model_dir(directory: Path, model: Any, tokenizer: Any, config: dict[str, Any]) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / TRAINING_ARGS_FILE).write_text(json.dumps(config, indent=2) + "\n")


def save_checkpoint(
    output_dir: Path, step: int, model: Any, tokenizer: Any, config: dict[str, Any], state: dict[str, Any]
) -> Path:
    """Write ``checkpoint-STEP`` atomically and return its path."""
    final = output_dir / f"checkpoint-{step}"
    temporary = output_dir / f".checkpoint-{step}.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    write_model_dir(temporary, model, tokenizer, config)
    torch.save(state, temporary / STATE_FILE)
    _fsync_files(temporary)
    if final.exists():  # the same step saved twice (e.g. a signal right after a periodic save)
        shutil.rmtree(final)
    os.replace(temporary, final)
    _fsync_directory_entry(output_dir)
    return final


def save_final_model(output_dir: Path, model: Any, tokenizer: Any, config: dict[str, Any]) -> None:
    """Put the final model and tokenizer into ``output_dir`` itself, each file replaced atomically."""
    temporary = output_dir / ".final.tmp"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    write_model_dir(temporary, model, tokenizer, config)
    for item in temporary.iterdir():
        os.replace(item, output_dir / item.name)
    temporary.rmdir()


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest first."""
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    if keep is None:
        return
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path)


def resolve_resume(resume: str | None, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``latest`` in ``output_dir`` or the directory given."""
    if resume is None:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            raise QAError(f"--resume: no checkpoint in {output_dir} to resume from")
        return checkpoints[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise QAError(f"--resume {path}: not a training checkpoint (no {STATE_FILE})")
    return path


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    """Load without running pickled code: tensors and plain containers only."""
    try:
        return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise QAError(f"{checkpoint / STATE_FILE}: cannot load the training state ({error})") from None


def _fsync_files(directory: Path) -> None:
    for item in directory.iterdir():
        if item.is_file():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())


def _fsync_directory_entry(directory: Path) -> None:
    """Make the rename itself durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
