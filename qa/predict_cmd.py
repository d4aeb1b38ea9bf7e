"""`python predict.py --question Q --context C`: answer questions with a fine-tuned checkpoint.

Imports only what answering needs (torch, transformers, numpy): no `datasets`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from qa.cli_args import ArgumentParser, add_answer_flags, answer_settings, positive_int
from qa.errors import QAError, exit_on_qa_error

DEFAULT_CHECKPOINT = "finetuned-squad"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="predict.py", description="Answer questions from a context with a QA checkpoint.")
    source = parser.add_argument_group("input (a question with --context / --context-file, or --input)")
    source.add_argument("--question", help="the question")
    source.add_argument("--context", help="the context text")
    source.add_argument("--context-file", help="read the context from this file ('-' for standard input)")
    source.add_argument("--input", type=Path, help='JSON lines file of {"question", "context", "id"?} objects')
    model = parser.add_argument_group("model and decoding")
    model.add_argument("--ckpt", default=DEFAULT_CHECKPOINT, help="checkpoint directory (train.py output) or hub id")
    model.add_argument("--top-k", type=positive_int, default=1, help="how many answers to return")
    add_answer_flags(model, batch_size=32)
    model.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast dtype on CUDA; CPU runs fp32",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON: {answer, score, start, end} (a list of them with --top-k > 1)"
    )
    return parser


def read_requests(args: argparse.Namespace) -> tuple[list[dict[str, str]], bool]:
    """The questions to answer and whether they came from --input (JSON lines out)."""
    if args.input is not None:
        if args.question or args.context or args.context_file:
            raise QAError("--input cannot be combined with --question / --context / --context-file")
        return _read_jsonl(args.input), True
    if args.question is None:
        raise QAError("give --question with --context or --context-file, or --input FILE.jsonl")
    if (args.context is None) == (args.context_file is None):
        raise QAError("give exactly one of --context and --context-file")
    context = args.context if args.context is not None else _read_context_file(args.context_file)
    request = {"id": "0", "question": args.question, "context": context}
    _check_request(request, "command line")
    return [request], False


def _read_context_file(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise QAError(f"{name}: cannot read the context file ({error})") from None


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise QAError(f"{path}: cannot read ({error})") from None
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
        request = {
            "id": str(record.get("id", number)),
            "question": record.get("question"),
            "context": record.get("context"),
        }
        _check_request(request, f"{path}: line {number}")
        requests.append(request)
    if not requests:
        raise QAError(f"{path}: no questions in the file")
    return requests


def _check_request(request: dict[str, Any], where: str) -> None:
    for field in ("question", "context"):
        value = request[field]
        if not isinstance(value, str):
            raise QAError(f"{where}: field '{field}' is missing or not a string")
        if not value.strip():
            raise QAError(f"{where}: field '{field}' is empty")


def _check_checkpoint(ckpt: str) -> None:
    path = Path(ckpt)
    if ckpt == DEFAULT_CHECKPOINT and not path.exists():
        raise QAError(f"no checkpoint at ./{DEFAULT_CHECKPOINT}: run train.py first, or pass --ckpt PATH")
    if path.exists() and not (path / "config.json").is_file():
        raise QAError(f"{ckpt}: not a checkpoint directory (no config.json)")


def _answers(prediction: Any, top_k: int) -> list[dict[str, Any]]:
    if not prediction.nbest:
        return [{"answer": "", "score": 0.0, "start": 0, "end": 0}]
    return [
        {
            "answer": candidate.text,
            "score": round(candidate.probability, 6),
            "start": candidate.start,
            "end": candidate.end,
        }
        for candidate in prediction.nbest[:top_k]
    ]


@exit_on_qa_error
def main(argv: list[str] | None = None) -> list[list[dict[str, Any]]]:
    args = build_parser().parse_args(argv)
    requests, from_file = read_requests(args)
    _check_checkpoint(args.ckpt)

    from qa.evaluation import answer_examples
    from qa.modeling import load_qa_model, load_tokenizer
    from qa.runtime import setup_runtime

    settings = answer_settings(args, min_n_best=args.top_k)
    runtime = setup_runtime(args.precision)
    tokenizer = load_tokenizer(args.ckpt)
    model = load_qa_model(args.ckpt, require_qa_head=True).to(runtime.device)
    columns = {name: [request[name] for request in requests] for name in ("id", "question", "context")}
    predictions = answer_examples(model, tokenizer, columns, settings, runtime, with_nbest=True)
    results = [_answers(prediction, args.top_k) for prediction in predictions]

    for request, answers in zip(requests, results):
        if from_file:
            line = {"id": request["id"], **answers[0]} if args.top_k == 1 else {"id": request["id"], "answers": answers}
            print(json.dumps(line, ensure_ascii=False))
        elif args.json:
            print(json.dumps(answers[0] if args.top_k == 1 else answers, ensure_ascii=False))
        else:
            for answer in answers:
                print(answer["answer"])
                print(f"{answer['score']:.4f}")
    return results
