"""Fuzz predict.py --serve with schemathesis (the maintained OpenAPI fuzzer) from its published schema.

Starts a real server on a free loopback port (a tiny arranged model built here, or --ckpt), runs
schemathesis against /openapi.json with every check but positive_data_acceptance (the schema
cannot say "holds a visible character", which the server requires of a question and a context),
then checks that the server logged no traceback and no error and still answers a known question.
Prints the number of generated requests, the time, and the server's log lines.

    PYTHONPATH=.:tests python bench/fuzz_server.py [--max-examples 300] [--ckpt DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fuzzer settings are the suite's own (tests/serving_helpers.py)
from serving_helpers import FUZZ_CONFIG, FUZZ_FLAGS  # noqa: E402

KNOWN = {"question": "Who won?", "context": "In 2016 the Denver Broncos won the super bowl."}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=300, help="per API operation and phase")
    parser.add_argument("--ckpt", help="a QA checkpoint (default: a tiny arranged model that answers 'Denver Broncos')")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        ckpt = args.ckpt
        if ckpt is None:
            from helpers import make_arranged_model_dir

            ckpt = str(make_arranged_model_dir(Path(scratch) / "model"))
        command = [sys.executable, "predict.py", "--serve", "--ckpt", ckpt, "--port", "0", "--max-length", "64"]
        command += ["--stride", "16", "--max-queue", "8", "--max-context-chars", "5000", "--max-body-bytes", "20000"]
        log_path = Path(scratch) / "server.log"
        with log_path.open("w") as log:
            server = subprocess.Popen(command, cwd=ROOT, stderr=log)
            try:
                base = wait_for_port(log_path, server)
                config = Path(scratch) / "schemathesis.toml"
                config.write_text(FUZZ_CONFIG)
                began = time.perf_counter()
                result = subprocess.run(
                    [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"]
                    + [base + "/openapi.json", *FUZZ_FLAGS, "--max-examples", str(args.max_examples)]
                    + ["--seed", str(args.seed)],
                    cwd=scratch,
                    capture_output=True,
                    text=True,
                )
                seconds = time.perf_counter() - began
                request = urllib.request.Request(
                    base + "/answer", json.dumps(KNOWN).encode(), {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=60) as response:
                    after = json.load(response)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=120)
        summary = re.findall(r"\d+ generated.*", result.stdout)
        print(result.stdout[-2500:] if result.returncode else "")
        print(f"schemathesis exit status {result.returncode}: {summary[-1] if summary else '?'} in {seconds:.1f} s")
        print(f"known question afterwards: {after['answer']!r}; server exit status {server.returncode}")
        lines = log_path.read_text().splitlines()[1:]
        print(
            f"server log after start-up: {len(lines)} lines, tracebacks: {sum('Traceback' in line for line in lines)}"
        )
        for line in sorted(set(lines)):
            print(f"  {lines.count(line)} x {line}")


def wait_for_port(log_path: Path, server: subprocess.Popen) -> str:
    deadline = time.time() + 120
    while time.time() < deadline and server.poll() is None:
        match = re.search(r"on (http://127\.0\.0\.1:\d+) ", log_path.read_text())
        if match:
            return match.group(1)
        time.sleep(0.1)
    raise SystemExit(f"the server did not start: {log_path.read_text()}")


if __name__ == "__main__":
    main()
