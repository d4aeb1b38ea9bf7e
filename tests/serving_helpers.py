"""Talking to a real predict.py --serve from tests: start it on a free port, call it, poll it (loopback only)."""

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from helpers import REPO_ROOT
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CONTEXT = "In 2016 the Denver Broncos won the super bowl."
LIMITS = ["--max-body-bytes", "20000", "--max-context-chars", "5000", "--max-queue", "8", "--batch-wait-ms", "200"]
LIMITS += ["--read-timeout-s", "2"]


def start_server(model_dir, *extra):
    """A real server on --port 0: the port is the one it prints (so no two tests can race for one)."""
    command = [sys.executable, "predict.py", "--serve", "--ckpt", str(model_dir), "--port", "0"]
    command += ["--max-length", "64", "--stride", "16", *LIMITS, *extra]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, seen = time.time() + 60, []
    while time.time() < deadline:
        line = read_line(process.stderr, timeout=deadline - time.time())
        if not line:
            break
        seen.append(line)
        match = re.search(r"on http://127\.0\.0\.1:(\d+) ", line)
        if match:
            break
    else:
        match = None
    if not match:
        process.kill()
        raise AssertionError(f"no serving line within 60 s: {seen}")
    port = int(match.group(1))
    assert port != 0
    base = f"http://127.0.0.1:{port}"
    status, health, _ = call(base, "/health")  # the port printed is the port served
    assert status == 200 and health["status"] == "ready"
    return process, base


def read_line(stream, timeout):
    """One line of a child's output, or None when none comes within ``timeout`` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else None


def wait_until(condition, timeout=30):
    """Poll ``condition`` until it holds (an AssertionError after ``timeout`` seconds)."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.005)


def call(base, path, body=None, method=None, raw=None, timeout=60):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response), response.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), error.headers


def ask_concurrently(base, questions, results):
    """Start one thread per question, each POSTing it about CONTEXT; (status, body, headers) land in results."""
    threads = [
        threading.Thread(target=lambda q=q: results.append(call(base, "/answer", {"question": q, "context": CONTEXT})))
        for q in questions
    ]
    for thread in threads:
        thread.start()
    return threads


def raw_http(base, data, read=True, timeout=30):
    """Send raw bytes on a fresh connection; the response bytes (b"" when the server closed without one)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        if not read:
            return None
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def post_bytes(body, extra_headers=b""):
    return b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n" + (
        b"Content-Length: %d\r\n" % len(body) + extra_headers + b"\r\n" + body
    )


def drain(stream):
    """What a running child has written to ``stream`` so far, without waiting for more."""
    chunks = []
    while select.select([stream], [], [], 0.2)[0]:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


# schemathesis settings of the suite's bounded fuzz run (bench/fuzz_server.py runs the same, longer).
# Over-limit bodies, contexts and question lists get 413 (Content Too Large), by design.
FUZZ_CONFIG = "[checks.negative_data_rejection]\nexpected-statuses = [400, 413, 422]\n"
FUZZ_FLAGS = [
    "--checks",
    "all",
    "--exclude-checks",
    "positive_data_acceptance",
    "--request-timeout",
    "30",
    "--workers",
    "1",
    "--generation-database",
    "none",
    "--no-color",
]


def open_browser():
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Chromium and chromedriver are not installed (CI installs Debian's chromium, chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
