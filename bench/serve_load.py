"""Load on predict.py --serve: real dev questions from 1, 8 and 32 concurrent clients, against the same
questions answered one at a time in-process. Loopback only; every loop is bounded by the question count.

Prints questions/s, p50/p95/p99 latency and the server's resident memory before and after each level.

    PYTHONPATH=. python bench/serve_load.py --ckpt FINE_TUNED_DIR [--questions 1000]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "squad-v1.1" / "dev-v1.1-part1.json"


def load_questions(count: int) -> list[dict[str, str]]:
    document = json.loads(DEV.read_text(encoding="utf-8"))
    questions = [
        {"question": qa["question"], "context": paragraph["context"]}
        for article in document["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]
    return questions[:count]


def percentiles(latencies: list[float]) -> str:
    ordered = sorted(latencies)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return f"p50 {at(0.50) * 1000:.0f} ms, p95 {at(0.95) * 1000:.0f} ms, p99 {at(0.99) * 1000:.0f} ms"


def resident_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_at_a_time(ckpt: str, questions: list[dict[str, str]], precision: str) -> None:
    from qa.commands.predict import config_from_args
    from qa.data.questions import Question
    from qa.eval.answering import load_reader

    config = config_from_args(["--ckpt", ckpt, "--precision", precision])
    reader = load_reader(config.ckpt, config.window, config.decode, config.batch_size, config.precision)
    latencies = []
    began = time.perf_counter()
    for question in questions:
        started = time.perf_counter()
        reader.answer([Question(question["question"], question["context"])])
        latencies.append(time.perf_counter() - started)
    seconds = time.perf_counter() - began
    print(f"| one at a time, in-process | {len(questions) / seconds:.1f} | {percentiles(latencies)} | |")


def run_clients(base: str, questions: list[dict[str, str]], clients: int) -> tuple[float, list[float], int]:
    lock = threading.Lock()
    position = [0]
    latencies: list[float] = []
    failures = [0]

    def client() -> None:
        while True:
            with lock:
                if position[0] >= len(questions):
                    return
                question = questions[position[0]]
                position[0] += 1
            request = urllib.request.Request(
                base + "/answer", data=json.dumps(question).encode(), headers={"Content-Type": "application/json"}
            )
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    response.read()
            except OSError:
                failures[0] += 1
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies, failures[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--precision", default="auto", help="for the server and the in-process baseline alike")
    parser.add_argument(
        "--server-flags",
        action="extend",
        nargs="*",
        default=[],
        help="another predict.py --serve flag, attached with = (repeat for more): --server-flags=--batch-size=8",
    )
    args = parser.parse_args()
    questions = load_questions(args.questions)
    print(f"{len(questions)} questions from {DEV.name}; checkpoint {args.ckpt}")
    print("| clients | questions/s | latency | server RSS before -> after |")
    print("| --- | --- | --- | --- |")
    one_at_a_time(args.ckpt, questions, args.precision)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "predict.py",
            "--serve",
            "--ckpt",
            args.ckpt,
            "--port",
            str(port),
            "--precision",
            args.precision,
            *args.server_flags,
        ],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                with urllib.request.urlopen(base + "/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        run_clients(base, questions[:32], 8)  # warm-up
        for clients in args.clients:
            before = resident_mib(server.pid)
            seconds, latencies, failures = run_clients(base, questions, clients)
            after = resident_mib(server.pid)
            with urllib.request.urlopen(base + "/health") as response:
                health = json.load(response)
            print(
                f"| {clients} concurrent, server | {len(questions) / seconds:.1f} | {percentiles(latencies)} | "
                f"{before:.0f} -> {after:.0f} MiB |" + (f" {failures} failed" if failures else "")
            )
        print(f"server totals: {health['questions_answered']} questions in {health['forward_passes']} forward passes")
        print(f"mean latency at the last level: {statistics.mean(latencies) * 1000:.0f} ms")
    finally:
        server.terminate()
        server.wait(timeout=120)


if __name__ == "__main__":
    main()
