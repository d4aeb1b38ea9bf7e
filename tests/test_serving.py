"""predict.py --serve: the real server on a free local port, spoken to over HTTP (loopback only)."""

import json
import signal
import threading
import urllib.error
import urllib.request

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from serving_helpers import CONTEXT, ask_concurrently, call, open_browser, start_server

from qa.commands import predict as predict_cmd

# Each starts a real server (seconds of torch import and model load): the slow tier.
pytestmark = pytest.mark.slow

LONG_CONTEXT = "The people played music in the church of the city. " * 6 + CONTEXT


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
    predict_cmd.main(
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
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = [record["answers"] if "answers" in record else [record] for record in printed]
    for answers in expected:
        for answer in answers:
            answer.pop("id", None)  # --input gives each line its line number as id; these requests have none
    status, answers, _ = call(server, "/answer", questions)
    assert status == 200
    assert answers == [expected[0][0], expected[1][:3], expected[2][0]]
    status, single, _ = call(server, "/answer", questions[0])
    assert status == 200 and single == expected[0][0] and single["answer"] == "Denver Broncos"


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


def set_value(browser, element_id, text):
    """Type into a field; through JavaScript, since chromedriver cannot type characters outside the BMP."""
    browser.execute_script("arguments[0].value = arguments[1]", browser.find_element(By.ID, element_id), text)


def test_the_page_highlights_the_answer_in_a_real_browser_also_after_emoji(server):
    # Five emoji before the answer: the API's offsets count code points, JavaScript strings UTF-16 units.
    emoji_context = "🎉🎉🎉🎉🎉 Party! In 2016 the Denver Broncos won."
    browser = open_browser()
    try:
        for context in (CONTEXT, emoji_context):
            browser.get(server + "/")
            browser.find_element(By.ID, "question").send_keys("Who won?")
            set_value(browser, "context", context)
            browser.find_element(By.ID, "ask").click()
            mark = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "answer"))[0]
            assert mark.text == "Denver Broncos"
            assert browser.find_element(By.ID, "context-view").text == context
        # Passages separated by a line of ---: the answer's passage is shown, highlighted, and named.
        browser.get(server + "/")
        browser.find_element(By.ID, "question").send_keys("Who won?")
        set_value(browser, "context", "Paris is a city.\n---\n" + emoji_context)
        browser.find_element(By.ID, "ask").click()
        mark = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "answer"))[0]
        assert mark.text == "Denver Broncos" and browser.find_element(By.ID, "context-view").text == emoji_context
        assert "passage 2 of 2" in browser.find_element(By.ID, "status").text
        # A doubled separator and a trailing one send no empty passage; a longer line of dashes separates too.
        browser.get(server + "/")
        browser.find_element(By.ID, "question").send_keys("Who won?")
        set_value(browser, "context", "Paris is a city.\n---\n---\n" + CONTEXT + "\n-----\nA king.\n---\n")
        browser.find_element(By.ID, "ask").click()
        mark = WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "answer"))[0]
        assert mark.text == "Denver Broncos" and "passage 2 of 3" in browser.find_element(By.ID, "status").text
    finally:
        browser.quit()


# ---------------------------------------------------------------- one request cannot hurt another


def test_a_request_with_bad_text_gets_422_and_the_good_ones_queued_with_it_are_answered(server):
    # json.dumps escapes the lone surrogate as \ud800: valid JSON whose text is not valid Unicode.
    bad = json.dumps({"question": "Who \ud800 won?", "context": CONTEXT}).encode()
    results = []
    threads = ask_concurrently(server, [f"Who {i}?" for i in range(4)], results)
    threads.append(threading.Thread(target=lambda: results.append(call(server, "/answer", raw=bad))))
    threads[-1].start()
    for thread in threads:
        thread.join(timeout=60)
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 200, 200, 422]
    (refused,) = [body for status, body, _ in results if status == 422]
    assert refused["field"] == "question" and "lone surrogate U+D800" in refused["error"]
    assert all(body["answer"] == "Denver Broncos" for status, body, _ in results if status == 200)


@pytest.mark.parametrize(
    ("raw", "status", "fragment", "field"),
    [
        (json.dumps([1, 2]).encode(), 422, "[0]: expected an object", "[0]"),
        (b"[" * 5000 + b"]" * 5000, 400, "nested too deeply", None),
        (
            json.dumps({"question": "q", "context": "\u200b\u200d\x07 "}).encode(),
            422,
            "no visible character",
            "context",
        ),
        (json.dumps({"question": "q", "context": CONTEXT, "contxt": "x"}).encode(), 422, "not a field", "contxt"),
        (b"\xff\xfe{}", 400, "not UTF-8", None),
    ],
)
def test_more_bad_requests_get_a_4xx_naming_the_field(server, raw, status, fragment, field):
    got, body, headers = call(server, "/answer", raw=raw)
    assert (got, body.get("field")) == (status, field) and fragment in body["error"], body
    assert headers.get("X-Request-ID")


def test_ids_come_back_and_a_byte_order_mark_is_accepted(server):
    body = "\ufeff" + json.dumps(
        [
            {"question": "Who won?", "context": CONTEXT, "id": "q-1"},
            {"question": "Who won?", "context": CONTEXT, "id": 7, "top_k": 2},
            {"question": "Who won?", "context": CONTEXT},
        ]
    )
    status, answers, _ = call(server, "/answer", raw=body.encode())
    assert status == 200
    assert answers[0]["id"] == "q-1" and answers[0]["answer"] == "Denver Broncos"
    assert answers[1]["id"] == "7" and len(answers[1]["answers"]) == 2
    assert "id" not in answers[2] and answers[2]["answer"] == "Denver Broncos"


def test_head_and_options_get_405_with_an_allow_header(server):
    for method in ("HEAD", "OPTIONS", "PUT"):
        status, _, headers = call(server, "/answer", method=method)
        assert status == 405 and headers.get("Allow") == "POST", (method, dict(headers))


def test_the_openapi_schema_describes_the_real_request_and_responses(server):
    status, schema, _ = call(server, "/openapi.json")
    assert status == 200
    operation = schema["paths"]["/answer"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["anyOf"][1]["maxItems"] == 8  # --max-queue
    question = schema["components"]["schemas"]["Question"]
    assert question["required"] == ["question"] and question["additionalProperties"] is False
    assert {"context", "contexts"} <= set(question["properties"])  # one or the other: the server checks which
    assert question["properties"]["context"]["maxLength"] == 5000  # --max-context-chars
    assert {"200", "400", "408", "413", "422", "500", "503"} <= set(operation["responses"])
    # One contract: the bounds the schema states are where the server's parser draws its lines.
    properties, base = question["properties"], {"question": "Who won?", "context": CONTEXT}
    top_k, confidence = properties["top_k"], properties["min_confidence"]["anyOf"][0]
    for field, inside, outside in [
        ("top_k", top_k["maximum"], top_k["maximum"] + 1),
        ("top_k", top_k["minimum"], top_k["minimum"] - 1),
        ("min_confidence", confidence["maximum"], confidence["maximum"] + 0.01),
        ("min_confidence", confidence["minimum"], confidence["minimum"] - 0.01),
    ]:
        assert call(server, "/answer", {**base, field: inside})[0] == 200, (field, inside)
        status, refused, _ = call(server, "/answer", {**base, field: outside})
        assert (status, refused["field"]) == (422, field), (field, outside)
    status, refused, _ = call(server, "/answer", {**base, "topk": 2})
    assert (status, refused["field"]) == (422, "topk") and "topk" not in properties


def test_a_body_that_is_not_json_by_content_type_or_names_a_key_twice_is_refused(server):
    body = json.dumps({"question": "Who won?", "context": CONTEXT}).encode()
    request = urllib.request.Request(server + "/answer", data=body, headers={"Content-Type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 415 and "application/json" in json.loads(refused.value.read())["error"]
    twice = b'{"question": "Who won?", "context": "%s", "question": "Who lost?"}' % CONTEXT.encode()
    status, answer, _ = call(server, "/answer", raw=twice)
    assert status == 400 and "duplicate key 'question'" in answer["error"]
    near = json.dumps({"Question": "Who won?", "context": CONTEXT}).encode()
    status, answer, _ = call(server, "/answer", raw=near)
    assert status == 422 and answer["field"] == "question" and "found 'Question'" in answer["error"]
    assert call(server, "/answer", {"question": "Who won?", "context": CONTEXT})[0] == 200


def test_several_passages_over_http_and_a_bad_passage_list_fails_only_its_own_request(server):
    passages = ["Paris is a city.", CONTEXT]
    status, answer, _ = call(server, "/answer", {"question": "Who won?", "contexts": passages})
    assert status == 200 and answer["passage"] == 1 and answer["answer"] == "Denver Broncos"
    assert passages[1][answer["start"] : answer["end"]] == "Denver Broncos"
    results = []
    threads = ask_concurrently(server, ["Who won?"] * 3, results)
    bad = call(server, "/answer", {"question": "Who won?", "context": CONTEXT, "contexts": passages})
    for thread in threads:
        thread.join(timeout=60)
    assert bad[0] == 422 and bad[1]["field"] == "contexts"
    assert sorted(status for status, _, _ in results) == [200] * 3
