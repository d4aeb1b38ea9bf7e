"""bench/gpu_squad.py, the prepared GPU run, checked on the CPU: --smoke --torchrun starts two processes
(gloo here, NCCL on GPUs), the README's recipe is its default, and an existing --output-dir is kept."""

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT, write_squad_json

pytestmark = pytest.mark.slow


def gpu_script(*args):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(REPO_ROOT / "bench" / "gpu_squad.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, cwd=REPO_ROOT)


def test_smoke_under_torchrun_runs_two_processes_with_the_readme_recipe_and_keeps_an_output_dir(
    tiny_model_dir, tmp_path
):
    data = write_squad_json(tmp_path / "squad.json")
    out = tmp_path / "out"
    common = ["--model", str(tiny_model_dir), "--train-file", str(data), "--validation-file", str(data)]
    # batches of 2 (the test data holds 4 windows); the rest of the recipe as the README's
    common += ["--smoke", "--smoke-steps", "2", "--workers", "0", "--output-dir", str(out), "--batch-size", "2"]
    done = gpu_script(*common, "--torchrun")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["processes"], result["lr"], result["steps"]) == (2, 2e-5, 2)
    assert "(2 per device x 2 devices x 1 accumulation)" in done.stderr  # a process group of two
    assert "per process (the README's recipe: 16)" in " ".join(gpu_script("--help").stdout.split())
    assert "--warmup-ratio 0.0" in done.stderr  # the README's recipe: no warmup
    again = gpu_script(*common)
    assert again.returncode != 0 and f"--output-dir {out} exists; --overwrite replaces it" in again.stderr
    assert (out / "train_log.jsonl").is_file()  # kept
