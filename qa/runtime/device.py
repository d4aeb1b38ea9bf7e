"""Where the computation runs: device, mixed precision and torchrun process group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

import torch

from qa.config.settings import PRECISIONS


@dataclass
class Runtime:
    """The device and process layout of this run (world size 1 without torchrun)."""

    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16
    rank: int = 0
    world_size: int = 1
    # CPU inference in bf16: the weights themselves are bf16 (no autocast), which runs at the bf16 matmul
    # rate where autocast spends time casting fp32 weights on every call (bench/README.md).
    bf16_weights: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self) -> AbstractContextManager[Any]:
        """One autocast context for every precision: a no-op for fp32. With bf16 weights too: a family that
        makes fp32 tensors of its own inside the forward pass (XLNet's relative position encoding) would
        otherwise meet bf16 weights in one matmul and fail; with the weights already bf16 autocast casts
        nothing else (the same spans and time on MiniLM: bench/README.md)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)


def inference_batch_size(configured: int | None, runtime: Runtime) -> int:
    """Windows per inference forward pass: as given, else 64 on a GPU and 8 on a CPU, where one window
    already keeps the cores busy and small batches pad less and serve a queue sooner (measured in
    bench/README.md: evaluate.py and bench/serve_load.py)."""
    if configured is not None:
        return configured
    return 64 if runtime.device.type == "cuda" else 8


def resolve_precision(requested: str, device: torch.device, for_inference: bool = False) -> str:
    """``auto``: bf16 on GPUs that support it, else fp16 on CUDA. On a CPU: for inference, bf16 where
    the CPU computes it natively (AVX512-BF16 or AMX), else fp32; for training, fp32.

    The rule for a default is EM and F1 within 0.3 of fp32 on the shared dev part (bench/speed.py
    prints both); bf16 weights meet it on the native-bf16 CPUs measured (bench/README.md), while
    emulated bf16 is several times slower than fp32. ``--precision fp32`` stays exact.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {requested!r}")
    if requested == "auto":
        if device.type != "cuda":
            return "bf16" if for_inference and native_cpu_bf16() else "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return requested


def inference_runtime(runtime: Runtime) -> Runtime:
    """The runtime evaluate.py and predict.py use by default on this run's device (`resolve_precision` for
    inference): training's evaluations run under it, so that the threshold and calibrator they fit, and the
    scores they report, are those of the precision that will use them."""
    precision = resolve_precision("auto", runtime.device, for_inference=True)
    bf16_weights = runtime.device.type == "cpu" and precision == "bf16"
    return replace(runtime, precision=precision, bf16_weights=bf16_weights)


def precision_note(runtime: Runtime, requested: str) -> str:
    """What precision runs and why, in one line (stderr of evaluate.py, predict.py and the server)."""
    if runtime.device.type == "cuda":
        how = f"{runtime.precision} autocast" if runtime.precision != "fp32" else "fp32"
    elif runtime.bf16_weights:
        how = "bf16 weights, logits decoded in fp32"
    else:
        how = f"{runtime.precision} autocast" if runtime.precision != "fp32" else "fp32"
    if requested != "auto":
        why = f"--precision {requested}"
    elif runtime.device.type == "cuda":
        why = "auto on this GPU"
    elif runtime.bf16_weights:
        why = "auto: this CPU computes bf16 natively; --precision fp32 for exact fp32"
    else:
        why = "auto: this CPU has no native bf16"
    return f"precision: {how} on {runtime.device.type} ({why})"


def setup_runtime(precision: str = "auto", device: str | None = None, for_inference: bool = False) -> Runtime:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and start the process group if set.

    ``for_inference``: the runtime of evaluate.py, predict.py and the server (see `resolve_precision`);
    on a CPU, bf16 inference then runs on bf16 weights instead of autocast."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None:
        chosen = torch.device(device)
    elif torch.cuda.is_available():
        chosen = torch.device("cuda", local_rank)
    else:
        chosen = torch.device("cpu")
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world_size)
    resolved = resolve_precision(precision, chosen, for_inference)
    bf16_weights = for_inference and chosen.type == "cpu" and resolved == "bf16"
    runtime = Runtime(chosen, resolved, rank, world_size, bf16_weights)
    if runtime.device.type == "cpu" and runtime.precision == "bf16" and not native_cpu_bf16() and runtime.is_main:
        print(
            "warning: this CPU has no native bf16 (AVX512-BF16 or AMX); bf16 autocast is emulated here and much "
            "slower than fp32 (bench/README.md): use --precision fp32",
            file=sys.stderr,
        )
    if runtime.device.type == "cpu" and runtime.precision == "fp16" and runtime.is_main:
        print(
            "warning: CPUs have no fast fp16 matrix kernels: fp16 autocast runs several times slower than fp32 "
            "here (bench/README.md); use --precision fp32 (or bf16 where the CPU has native bf16)",
            file=sys.stderr,
        )
    return runtime


def native_cpu_bf16() -> bool:
    """Whether the CPU computes bf16 natively; elsewhere bf16 autocast is slower than fp32."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        torch.distributed.barrier()


def shutdown(runtime: Runtime) -> None:
    """Leave the process group together: a rank that tears it down while rank 0 is still
    scoring or saving can abort the whole job (gloo's threads die with the process)."""
    if runtime.distributed and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def main_process_first(runtime: Runtime) -> Iterator[None]:
    """Rank 0 runs the block first (say, to fill a cache), the other ranks after it."""
    if not runtime.is_main:
        barrier(runtime)
    try:
        yield
    finally:
        if runtime.is_main:
            barrier(runtime)


def release_freed_memory() -> None:
    """Batches of ever-different shapes leave glibc's heap fragmented and a long-running process's memory
    creeping up (the server, a streamed --input); handing freed pages back after each batch keeps it flat
    (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
