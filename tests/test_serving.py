"""predict.py --serve: the real server on a free local port, spoken to over HTTP (loopback only)."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from helpers import REPO_ROOT

from qa import predict_cmd

CONTEXT = "In 2016 the Denver Broncos won the super bowl."
LONG_CONTEXT = "The people played music in the church of the city. " * 6 + CONTEXT
LIMITS = ["--max-body-bytes", "20000", "--max-context-chars", "5000", "--max-queue", "8", "--batch-wait-ms", "200"]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model_dir, *extra):
    port = free_port()
    command = [
        sys.executable,
        "predict.py",
        "--serve",
        "--ckpt",
        str(model_dir),
        "--port",
        str(port),
        "--max-length",
        "64",
        "--stride",
        "16",
        *LIMITS,
        *extra,
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as response:
                if json.load(response)["status"] == "ready":
                    return process, base
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not start within 60 s")


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


@pytest.fixture(scope="module")
def server(arranged_model_dir):
    process, base = start_server(arranged_model_dir)
    yield base
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def test_answers_equal_predict_py_for_the_same_inputs(server, arranged_model_dir, tmp_path, capsys):
    questions = [
        {"question": "Who won?", "context": LONG_CONTEXT},
        {"question": "Who played?", "context": "Denver and the Broncos played.", "top_k": 3},
        {"question": "Which team?", "context": CONTEXT},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(json.dumps({k: v for k, v in q.items() if k != "top_k"}) for q in questions))
    expected = predict_cmd.main(
        [
            "--ckpt",
            str(arranged_model_dir),
            "--input",
            str(path),
            "--max-length",
            "64",
            "--stride",
            "16",
            "--top-k",
            "3",
        ]
    )
    capsys.readouterr()
    status, answers, _ = call(server, "/answer", questions)
    assert status == 200
    assert answers == [expected[0][0], expected[1][:3], expected[2][0]]
    status, single, _ = call(server, "/answer", questions[0])
    assert status == 200 and single == expected[0][0] and single["answer"] == "Denver Broncos"


def test_a_burst_is_served_in_fewer_forward_passes_than_requests(server):
    before = call(server, "/health")[1]["forward_passes"]
    results = []
    threads = ask_concurrently(server, [f"Who {i}?" for i in range(6)], results)
    for thread in threads:
        thread.join(timeout=60)
    assert [status for status, _, _ in results] == [200] * 6
    passes = call(server, "/health")[1]["forward_passes"] - before
    assert 1 <= passes < 6


@pytest.mark.parametrize(
    ("raw", "status", "fragment", "field"),
    [
        (b"{not json", 400, "invalid JSON", None),
        (json.dumps({"context": CONTEXT}).encode(), 422, "'question' is missing", "question"),
        (json.dumps({"question": "q", "context": "  "}).encode(), 422, "'context' is empty", "context"),
        (json.dumps({"question": "q", "context": CONTEXT, "top_k": "2"}).encode(), 422, "top_k", "top_k"),
        (json.dumps({"question": "q", "context": CONTEXT, "top_k": 99}).encode(), 422, "top_k", "top_k"),
        (
            json.dumps([{"question": "q", "context": CONTEXT}, {"question": 5, "context": "c"}]).encode(),
            422,
            "[1].question",
            "[1].question",
        ),
        (json.dumps({"question": "q", "context": "x" * 6000}).encode(), 413, "over 5000 characters", "context"),
        (json.dumps({"question": "q", "context": "x" * 30000}).encode(), 413, "over 20000 bytes", None),
        (json.dumps([]).encode(), 422, "empty list", None),
        (json.dumps("text").encode(), 422, "expected an object", None),
    ],
)
def test_bad_requests_get_a_4xx_json_error_naming_the_field(server, raw, status, fragment, field):
    got, body, _ = call(server, "/answer", raw=raw)
    assert got == status and fragment in body["error"]
    assert body.get("field") == field


def test_unknown_endpoints_and_methods_are_json_errors(server):
    assert call(server, "/nope")[:2] == (404, {"error": "no such endpoint: GET /nope"})
    status, body, _ = call(server, "/answer", method="GET")
    assert status == 405 and "error" in body
    status, health, _ = call(server, "/health")
    assert status == 200 and (health["max_length"], health["stride"], health["null_threshold"]) == (64, 16, None)


def test_a_full_queue_answers_503_with_retry_after(server):
    eight = [{"question": f"Who {i}?", "context": LONG_CONTEXT} for i in range(8)]
    first = []
    thread = threading.Thread(target=lambda: first.append(call(server, "/answer", eight)))
    thread.start()
    deadline = time.time() + 30
    while call(server, "/health")[1]["waiting"] < 8 and thread.is_alive() and time.time() < deadline:
        time.sleep(0.005)  # until the first request waits out --batch-wait-ms in the queue
    status, body, headers = call(server, "/answer", {"question": "One more?", "context": CONTEXT})
    thread.join(timeout=60)
    assert status == 503 and "busy" in body["error"] and headers.get("Retry-After") == "1"
    assert first[0][0] == 200 and len(first[0][1]) == 8
    assert call(server, "/answer", {"question": "Now?", "context": CONTEXT})[0] == 200  # and it recovers


def test_sigterm_finishes_the_requests_in_flight_and_exits_0(arranged_model_dir):
    process, base = start_server(arranged_model_dir, "--batch-wait-ms", "300")
    results = []
    threads = ask_concurrently(base, [f"Q{i}?" for i in range(4)], results)
    time.sleep(0.1)  # all four are in the batch's 300 ms wait
    process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=60)
    assert process.wait(timeout=60) == 0
    assert sorted(status for status, _, _ in results) == [200] * 4
    assert all(body["answer"] == "Denver Broncos" for _, body, _ in results)


def test_the_page_highlights_the_answer_in_a_real_browser(server):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Chromium and chromedriver are not installed (CI installs Debian's chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

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
    browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        browser.get(server + "/")
        browser.find_element(By.ID, "question").send_keys("Who won?")
        browser.find_element(By.ID, "context").send_keys(CONTEXT)
        browser.find_element(By.ID, "ask").click()
        mark = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "answer"))[0]
        assert mark.text == "Denver Broncos"
        assert browser.find_element(By.ID, "context-view").text == CONTEXT
    finally:
        browser.quit()
