"""Every file train.py writes to its output directory, written atomically and read back here.

``OUTPUT_DIR/checkpoint-STEP`` holds the model and tokenizer (``save_pretrained``),
``training_args.json`` and ``training_state.pt`` (optimizer, scheduler, scaler,
RNG states and the position in the run). A checkpoint is written into a hidden
temporary directory and renamed into place, and retired by renaming it away
before deleting it, so a directory named ``checkpoint-N`` is always complete.
The final model goes into ``OUTPUT_DIR`` itself with ``config.json`` moved last:
a directory without ``config.json`` is never taken for a model.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from qa.errors import QAError
from qa.files import (
    CHECKPOINT_PREFIX,
    CURVES_FILE,
    EVALUATION_FILES,
    LOCK_FILE,
    LOG_FILE,
    MLFLOW_RUN_FILE,
    MODEL_CARD_FILE,
    MODEL_CARD_TAG,
    STATE_FILE,
    TENSORBOARD_DIR,
    TRAINING_ARGS_FILE,
    write_json,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHECKPOINT_PATTERN = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
STATE_KEYS = ("optimizer", "scheduler", "scaler", "position", "rng")  # also, optional: "evaluations", "clock"
# What a finished run leaves in its output directory besides the model files.
RUN_FILES = (LOG_FILE, *EVALUATION_FILES)


def rng_states() -> dict[str, Any]:
    numpy_state = cast(tuple[Any, ...], np.random.get_state())  # the legacy tuple: legacy=True by default
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


def write_model_dir(
    directory: Path, model: Any, tokenizer: PreTrainedTokenizerBase, training_args: dict[str, Any]
) -> None:
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    write_json(directory / TRAINING_ARGS_FILE, training_args)


def save_checkpoint(
    output_dir: Path,
    step: int,
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    training_args: dict[str, Any],
    state: dict[str, Any],
    results: dict[str, Any] | None = None,
) -> Path:
    """Write ``checkpoint-STEP`` atomically and return its path; ``results`` ({file name: JSON value}),
    the result files of the evaluation made at this step, go in with the rest."""
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    temporary = output_dir / f".{CHECKPOINT_PREFIX}{step}.tmp"
    with _cleaned_up_on_failure(temporary, f"checkpoint {final}", output_dir):
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        write_model_dir(temporary, model, tokenizer, training_args)
        torch.save(state, temporary / STATE_FILE)
        for name, value in (results or {}).items():
            write_json(temporary / name, value)
        _fsync_files(temporary)
        if final.exists():  # the same step saved twice (e.g. a signal right after a periodic save)
            retire(final)
        os.replace(temporary, final)
        _fsync_directory_entry(output_dir)
    return final


def save_final_model(
    output_dir: Path, model: Any, tokenizer: PreTrainedTokenizerBase, training_args: dict[str, Any]
) -> None:
    """Put the final model and tokenizer into ``output_dir`` itself (see `_install_final`)."""
    _install_final(output_dir, lambda temporary: write_model_dir(temporary, model, tokenizer, training_args))


def promote_checkpoint(output_dir: Path, checkpoint: Path) -> None:
    """Make a checkpoint's model the final model: its files, byte for byte, without the training state and
    the evaluation files (the caller writes those)."""

    def copy_model_files(temporary: Path) -> None:
        for item in checkpoint.iterdir():
            if item.is_file() and item.name not in (STATE_FILE, *EVALUATION_FILES):
                shutil.copy2(item, temporary / item.name)

    _install_final(output_dir, copy_model_files)


def _install_final(output_dir: Path, fill: Any) -> None:
    """Files are written to a temporary directory first (by ``fill``); then ``config.json``, the file that
    makes a directory a model, is removed, the other files are moved in, and the new ``config.json``
    comes last. A kill in between leaves a directory that loads as nothing (the checkpoints keep the
    weights), never new arguments beside old weights.
    """
    temporary = output_dir / ".final.tmp"
    with _cleaned_up_on_failure(temporary, "the final model", output_dir):
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        fill(temporary)
        _fsync_files(temporary)
        (output_dir / "config.json").unlink(missing_ok=True)
        for item in sorted(temporary.iterdir(), key=lambda path: path.name == "config.json"):
            os.replace(item, output_dir / item.name)
        temporary.rmdir()
        _fsync_directory_entry(output_dir)


@contextmanager
def _cleaned_up_on_failure(temporary: Path, what: str, output_dir: Path) -> Iterator[None]:
    """Leave no temporary directory behind, and say "no space left" in one line when that is the cause."""
    try:
        yield
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if _is_disk_full(error):
            kept = list_checkpoints(output_dir)
            raise QAError(
                f"no space left on the device while writing {what}; nothing half-written was kept. "
                f"Last good checkpoint: {kept[-1] if kept else 'none'}. Free space, then continue with --resume"
            ) from None
        raise


def _is_disk_full(error: BaseException | None) -> bool:
    """torch.save and safetensors wrap the OSError; look through the chain and the message."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


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


def retire(path: Path) -> None:
    """Remove a checkpoint directory atomically: rename it out of sight, then delete it."""
    doomed = path.with_name(f".{path.name}.deleting")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def prune_checkpoints(output_dir: Path, keep: int | None, protect: Path | None = None) -> None:
    """Keep the newest ``keep`` checkpoints, and ``protect`` (the best one) whatever its age."""
    if keep is None:
        return
    for path in list_checkpoints(output_dir)[:-keep]:
        if protect is None or path.name != protect.name:
            retire(path)


def remove_leftovers(output_dir: Path) -> None:
    """Temporary and half-deleted directories of a run that was killed."""
    if output_dir.is_dir():
        for path in output_dir.iterdir():
            if path.name.startswith(".") and path.name.endswith((".tmp", ".deleting")):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def holds_a_run(output_dir: Path) -> bool:
    """Whether ``output_dir`` holds the model, checkpoints or logs of an earlier run."""
    if not output_dir.is_dir():
        return False
    names = {path.name for path in output_dir.iterdir()}
    return bool(
        names & {"config.json", TRAINING_ARGS_FILE, *RUN_FILES} or any(CHECKPOINT_PATTERN.match(n) for n in names)
    )


def clear_run(output_dir: Path, tokenizer_files: list[str]) -> None:
    """Delete what train.py writes into ``output_dir`` (nothing else: it may be a user's directory)."""
    if not output_dir.is_dir():
        return
    names = {"config.json", "model.safetensors", TRAINING_ARGS_FILE, CURVES_FILE, MLFLOW_RUN_FILE, *RUN_FILES}
    names.update(tokenizer_files)
    for path in output_dir.iterdir():
        if CHECKPOINT_PATTERN.match(path.name) and path.is_dir():
            retire(path)
        elif path.name in names and path.is_file():
            path.unlink()
        elif path.name == MODEL_CARD_FILE and MODEL_CARD_TAG in path.read_text(errors="replace"):
            path.unlink()  # our model card; a README.md of the user's stays
        elif path.name == TENSORBOARD_DIR and path.is_dir():
            if all(".tfevents." in item.name for item in path.rglob("*") if item.is_file()):
                shutil.rmtree(path)
    remove_leftovers(output_dir)


@contextmanager
def output_dir_lock(output_dir: Path) -> Iterator[None]:
    """One train.py per output directory. The OS drops the lock when its holder dies, so a
    killed run never leaves a stale lock behind, and a run that ends (finished or failed) removes its
    lock file, so a finished model directory holds only what is published or loaded. A run that ends
    having written nothing else (it failed before doing work) leaves the file system as it found it:
    no directory that it created."""
    import fcntl

    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    found = {item.name for item in output_dir.iterdir()}
    handle = path.open("a+")
    locked = False
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise QAError(
                f"--output-dir {output_dir} is in use by another train.py ({holder}); wait for it or pick another "
                "directory"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        if locked:
            untouched = {item.name for item in output_dir.iterdir()} == found | {LOCK_FILE}
            path.unlink(missing_ok=True)  # still held: no other run took it meanwhile
            if untouched and created:
                output_dir.rmdir()
        handle.close()


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
    path = checkpoint / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise QAError(f"{path}: cannot load the training state ({str(error).splitlines()[0]})") from None
    if isinstance(state, dict) and "progress" in state and "position" not in state:
        state["position"] = state.pop("progress")  # checkpoints written before the rename
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise QAError(f"{path}: not a training state of this tool (missing: {', '.join(missing)})")
    return state


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
