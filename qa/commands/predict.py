"""`python predict.py --question Q --context C`: answer questions with a fine-tuned checkpoint.

Imports only what answering needs (torch, transformers, numpy): no `datasets`.
With ``--input`` every non-blank line gets exactly one output line, in order,
carrying that line's own id (default: its line number); ids need not be unique
(the output is positional). A line may ask for its own ``top_k``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from qa.config.cli import command_parser, parse_config
from qa.config.predict import PredictConfig
from qa.data.questions import Question, QuestionProblem, check_text_field, question_from_json
from qa.errors import QAError, exit_on_qa_error
from qa.files import json_line
from qa.text import read_stdin, read_text


def config_from_args(argv: list[str] | None = None) -> PredictConfig:
    parser = command_parser("predict.py", "Answer questions from a context with a QA checkpoint.", PredictConfig)
    return parse_config(parser, PredictConfig, argv)


def read_question(config: PredictConfig) -> Question:
    """The one question of --question with --context or --context-file."""
    if config.question is None:
        raise QAError("give --question with --context or --context-file, or --input FILE.jsonl")
    if (config.context is None) == (config.context_file is None):
        raise QAError("give exactly one of --context and --context-file")
    try:
        question = check_text_field("question", config.question, from_command_line=True)
        if config.context is not None:
            context = check_text_field("context", config.context, from_command_line=True)
        elif config.context_file is not None:
            context = check_text_field("context", _read_context_file(config.context_file))
    except QuestionProblem as problem:
        flag = "--context-file" if problem.field == "context" and config.context_file else f"--{problem.field}"
        raise QAError(f"{flag}: {problem.problem}") from None
    return Question(question, context, "0", config.top_k, config.min_confidence)


def _read_context_file(name: str) -> str:
    if name == "-":
        return read_stdin("--context-file -")
    return read_text(Path(name))


@exit_on_qa_error
def main(argv: list[str] | None = None) -> list[list[dict[str, Any]]]:
    config = config_from_args(argv)
    if config.serve:
        from qa.serve.server import serve

        serve(config)
        return []
    if config.input_file is not None:
        if config.question or config.context or config.context_file:
            raise QAError("--input cannot be combined with --question / --context / --context-file")
        _answer_input(config, config.input_file)
        return []
    question = read_question(config)

    from qa.eval.answering import load_reader

    reader = load_reader(
        config.ckpt, config.window, config.decode, config.batch_size, config.precision, config.max_batch_tokens
    )
    results = reader.answer([question])
    for answers in results:
        if config.print_json:
            print(json_line(answers[0] if config.top_k == 1 else answers))
        else:
            for answer in answers:
                print(_answer_text(answer, question.min_confidence))
                print(f"{answer['score']:.4f}")
    sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    return results


def _answer_input(config: PredictConfig, source: str) -> None:
    """--input FILE (or - for standard input): every non-blank line gets one JSON line, in order, written
    chunk by chunk to standard output or --output (`qa.eval.streaming`); nothing is held whole. The
    output is checked and locked before the model loads (`qa.eval.stream_output`)."""
    from qa.eval.stream_output import OutputLock, check_output_path, is_stream

    if source == "-" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise QAError("--input -: torchrun's processes cannot share standard input; give a file")
    if source != "-" and Path(source).is_dir():
        raise QAError(f"--input {source}: is a directory")
    output = Path(config.output) if config.output is not None else None
    if output is not None:
        check_output_path(output, source, config.resume, config.overwrite)
    # One writer per output: rank 0 writes, so rank 0 holds the lock, from before the model loads to the end.
    writes = int(os.environ.get("RANK", "0")) == 0
    lock = OutputLock(output) if output is not None and not is_stream(output) and writes else None
    try:
        _answer_to(config, source)
    finally:
        if lock is not None:
            lock.release()


def _answer_to(config: PredictConfig, source: str) -> None:
    from qa.eval.answering import load_reader
    from qa.eval.streaming import answer_stream, count_questions, stream_settings
    from qa.runtime.device import shutdown

    def read(record: Any) -> Question:
        return question_from_json(
            record,
            max_top_k=config.decode.n_best,
            default_top_k=config.top_k,
            default_min_confidence=config.min_confidence,
            known_fields_only=True,
        )

    # A file is checked whole before the model loads: a bad line is refused before any work or output.
    # Standard input (and a named pipe, which can be read once) is checked as it comes, chunk by chunk.
    total = count_questions(source, read) if source != "-" and Path(source).is_file() else None
    if total == 0:
        raise QAError(f"{source}: no questions in the file")
    reader = load_reader(
        config.ckpt, config.window, config.decode, config.batch_size, config.precision, config.max_batch_tokens
    )
    try:
        answer_stream(
            reader,
            source,
            read,
            chunk_size=config.chunk_size,
            output=config.output,
            resume=config.resume,
            overwrite=config.overwrite,
            settings=stream_settings(reader, config.top_k, config.min_confidence, config.chunk_size),
            progress=config.progress,
            total=total,
        )
        sys.stdout.flush()
    finally:
        shutdown(reader.runtime)


def _answer_text(answer: dict[str, Any], min_confidence: float | None) -> str:
    """What the plain output prints for an answer: the text, or why there is none."""
    if answer.get("withheld"):
        return f"(no answer given: the best answer's score is below --min-confidence {min_confidence})"
    if answer.get("no_answer"):
        return "(no answer: the context does not say)"
    return answer["answer"]
