"""`python predict.py --question Q --context C`: answer questions with a fine-tuned checkpoint.

Imports only what answering needs (torch, transformers, numpy): no `datasets`.
With ``--input`` every non-blank line gets exactly one output line, in order,
carrying that line's own id; ids need not be unique (the output is positional).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from qa.cli import command_parser, parse_config
from qa.config import PredictConfig
from qa.errors import QAError, exit_on_qa_error


def config_from_args(argv: list[str] | None = None) -> PredictConfig:
    parser = command_parser("predict.py", "Answer questions from a context with a QA checkpoint.", PredictConfig)
    return parse_config(parser, PredictConfig, argv)


def read_requests(config: PredictConfig) -> tuple[list[dict[str, str]], bool]:
    """The questions to answer and whether they came from --input (JSON lines out)."""
    if config.input is not None:
        if config.question or config.context or config.context_file:
            raise QAError("--input cannot be combined with --question / --context / --context-file")
        return _read_jsonl(Path(config.input)), True
    if config.question is None:
        raise QAError("give --question with --context or --context-file, or --input FILE.jsonl")
    if (config.context is None) == (config.context_file is None):
        raise QAError("give exactly one of --context and --context-file")
    context = config.context if config.context is not None else _read_context_file(config.context_file)
    request = {"id": "0", "question": config.question, "context": context}
    check_request(request, "command line")
    return [request], False


def _read_context_file(name: str) -> str:
    if name == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise QAError("--context-file -: standard input is closed")
        try:
            return sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as error:
            raise QAError(f"--context-file -: standard input is not UTF-8 text ({error.reason})") from None
        except OSError as error:
            raise QAError(f"--context-file -: cannot read standard input ({error.strerror})") from None
    try:
        return Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise QAError(f"{name}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise QAError(f"{name}: cannot read the context file ({error.strerror})") from None


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise QAError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise QAError(f"{path}: cannot read ({error.strerror})") from None
    requests = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise QAError(f"{path}: line {number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise QAError(f"{path}: line {number}: expected an object with 'question' and 'context'")
        given_id = record.get("id")
        if given_id is not None and (isinstance(given_id, bool) or not isinstance(given_id, str | int)):
            raise QAError(f"{path}: line {number}, field 'id': must be a string or an integer, got {given_id!r}")
        request = {
            "id": str(given_id) if given_id is not None else str(number),
            "question": record.get("question"),
            "context": record.get("context"),
        }
        check_request(request, f"{path}: line {number}")
        requests.append(request)
    if not requests:
        raise QAError(f"{path}: no questions in the file")
    return requests


def check_request(request: dict[str, Any], where: str) -> None:
    for field in ("question", "context"):
        value = request[field]
        if not isinstance(value, str):
            raise QAError(f"{where}: field '{field}' is missing or not a string")
        if not value.strip():
            raise QAError(f"{where}: field '{field}' is empty")


def answers_json(prediction: Any, top_k: int, with_null: bool = False) -> list[dict[str, Any]]:
    """The best ``top_k`` answers of one prediction as JSON objects (what --json prints).

    ``with_null`` (a model with a null threshold): every object says whether it is
    the "no answer" candidate, which ranks among the spans.
    """
    if not prediction.nbest:
        answers = [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
    else:
        answers = [
            {
                "answer": candidate.text,
                "score": round(candidate.probability, 6),
                "start": candidate.start,
                "end": candidate.end,
            }
            for candidate in prediction.nbest[:top_k]
        ]
    if with_null:
        for answer in answers:
            answer["no_answer"] = answer["answer"] == ""
    return answers


@exit_on_qa_error
def main(argv: list[str] | None = None) -> list[list[dict[str, Any]]]:
    config = config_from_args(argv)
    if config.serve:
        from qa.serving import serve

        serve(config)
        return []
    requests, from_file = read_requests(config)

    from qa.evaluation import AnswerSettings, answer_examples
    from qa.modeling import check_model_fits, load_qa_model, load_tokenizer, with_stored_threshold
    from qa.runtime import inference_batch_size, setup_runtime

    check_model_fits(config.ckpt, config.window)
    runtime = setup_runtime(config.precision)
    model = load_qa_model(config.ckpt, require_qa_head=True).to(runtime.device)
    tokenizer = load_tokenizer(config.ckpt)
    # Positions, not the users' ids, key the examples: ids may repeat and every line is answered.
    columns = {
        "id": [str(index) for index in range(len(requests))],
        "question": [request["question"] for request in requests],
        "context": [request["context"] for request in requests],
    }
    decode = with_stored_threshold(config.decode, model)
    settings = AnswerSettings(config.window, decode, inference_batch_size(config.batch_size, runtime))
    predictions = answer_examples(model, tokenizer, columns, settings, runtime, with_nbest=True)
    with_null = decode.null_threshold is not None
    results = [answers_json(prediction, config.top_k, with_null) for prediction in predictions]

    for request, answers in zip(requests, results, strict=True):
        if from_file:
            line = (
                {"id": request["id"], **answers[0]} if config.top_k == 1 else {"id": request["id"], "answers": answers}
            )
            print(json.dumps(line, ensure_ascii=False))
        elif config.json:
            print(json.dumps(answers[0] if config.top_k == 1 else answers, ensure_ascii=False))
        else:
            for answer in answers:
                print(answer["answer"] if not answer.get("no_answer") else "(no answer: the context does not say)")
                print(f"{answer['score']:.4f}")
    sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    return results
