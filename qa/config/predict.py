"""What `python predict.py` can be told, in its two modes: one-shot answers and the server."""

from __future__ import annotations

from dataclasses import dataclass, fields

from qa.config.settings import (
    DecodeSettings,
    Problems,
    WindowSettings,
    batch_tokens_setting,
    checkpoint_setting,
    field_flag,
    inference_batch_setting,
    precision_setting,
    setting,
)

# PredictConfig fields that only one of predict.py's two modes uses; given to the other, they are refused.
ONE_SHOT = "one-shot"
SERVING = "serving"


@dataclass
class Answering:
    """The questions to answer, the model and how it decodes."""

    question: str | None = setting(
        None, "the question", group="input (a question with --context or --input)", mode=ONE_SHOT
    )
    context: str | None = setting(None, "the context text", mode=ONE_SHOT)
    context_file: str | None = setting(None, "read the context from this file ('-' for standard input)", mode=ONE_SHOT)
    input_file: str | None = setting(
        None,
        'JSON lines file, one question per line: {"question", "context" or "contexts" (a list of passages), '
        '"id"?, "top_k"?, "min_confidence"?}',
        mode=ONE_SHOT,
        flag="input",
    )
    ckpt: str = checkpoint_setting("model and decoding")
    top_k: int = setting(1, "how many answers to return (at most --n-best)", mode=ONE_SHOT)
    min_confidence: float | None = setting(
        None,
        "selective answering: answers scored below this (0-1) come back as no answer, with their score",
        mode=ONE_SHOT,
    )
    window: WindowSettings = setting(WindowSettings, as_trained=True)
    decode: DecodeSettings = setting(DecodeSettings)
    batch_size: int | None = inference_batch_setting()
    max_batch_tokens: int = batch_tokens_setting("")
    precision: str = precision_setting()
    print_json: bool = setting(
        False, "print JSON: {answer, score, start, end} (a list of them with --top-k > 1)", mode=ONE_SHOT, flag="json"
    )


@dataclass
class Serving:
    """predict.py --serve: where to listen and what one request may cost."""

    serve: bool = setting(False, "serve an HTTP API (POST /answer, GET /health, GET /) instead", group="serving")
    host: str = setting("127.0.0.1", "address to listen on (another than 127.0.0.1 exposes the model)", mode=SERVING)
    port: int = setting(8000, "port to listen on (0: any free port, printed at start)", mode=SERVING)
    max_body_bytes: int = setting(1_000_000, "largest request body; larger ones get 413", mode=SERVING)
    max_context_chars: int = setting(100_000, "longest context of one question; longer ones get 413", mode=SERVING)
    max_passages: int = setting(
        64,
        "most passages in the contexts of one question; more get 413 (each is read as its own context)",
        mode=SERVING,
    )
    max_queue: int = setting(
        256,
        "passages (a question's context, or each of its contexts) in one request, and waiting or in work, at "
        "most: more in one request get 413, more waiting get 503 (Retry-After)",
        mode=SERVING,
    )
    access_log: bool = setting(
        True,
        "log one line per request on standard error: method, path, status, questions, milliseconds",
        mode=SERVING,
    )
    max_batch_questions: int = setting(
        64,
        "passages answered together in one batch at most; a request's work stops between batches once it has timed out",
        mode=SERVING,
    )
    batch_wait_ms: float = setting(5.0, "how long a batch waits for more requests once the first arrived", mode=SERVING)
    read_timeout_s: float = setting(
        10.0, "a client must send its request headers, and then its body, within this many seconds", mode=SERVING
    )
    answer_timeout_s: float = setting(
        60.0, "a request not answered within this many seconds gets 503 and its questions are dropped", mode=SERVING
    )


@dataclass
class LargeInputs:
    """predict.py --input at any size: where the answers go, in chunks, resumable."""

    output: str | None = setting(
        None,
        "write the JSON lines of --input to this file (each chunk appended whole and flushed to disk) instead "
        "of standard output",
        group="large inputs (--input)",
        mode=ONE_SHOT,
    )
    resume: bool = setting(
        False, "--output exists from a run that stopped: continue after its last complete chunk", mode=ONE_SHOT
    )
    overwrite: bool = setting(False, "--output exists: replace it", mode=ONE_SHOT)
    chunk_size: int = setting(
        1000,
        "questions read, answered and written together (memory follows this, not the input's size); chunks sit "
        "at fixed positions of the input, so a resumed run batches as an uninterrupted one",
        mode=ONE_SHOT,
    )
    progress: bool = setting(True, "a progress bar on standard error (questions, rate, time left)", mode=ONE_SHOT)


@dataclass
class PredictConfig(Serving, LargeInputs, Answering):
    """Everything `python predict.py` can be told (the fields of `Answering`, `LargeInputs`, then `Serving`)."""

    def problems(self) -> list[str]:
        problems = Problems(self.window.problems() + self.decode.problems())
        problems.positive(self, "top_k")
        problems.need(
            self.min_confidence is None or 0 <= self.min_confidence <= 1,
            f"--min-confidence must be in [0, 1], got {self.min_confidence}",
        )
        problems.positive(self, "batch_size", optional=True)
        problems.positive(self, "max_batch_tokens", "chunk_size")
        problems.need(not (self.resume and self.overwrite), "give one of --resume and --overwrite, not both")
        for name in ("output", "resume", "overwrite"):
            problems.need(
                self.input_file is not None or not getattr(self, name),
                f"--{name} goes with --input (answers of a JSON lines file)",
            )
        problems.need(
            self.output is not None or not (self.resume or self.overwrite),
            "--resume and --overwrite are about an --output file: give --output PATH",
        )
        problems.positive(
            self, "max_body_bytes", "max_context_chars", "max_passages", "max_queue", "max_batch_questions"
        )
        problems.finite(self, "batch_wait_ms", "read_timeout_s", "answer_timeout_s")
        problems.positive(self, "read_timeout_s", "answer_timeout_s")
        problems.need(
            0 <= self.batch_wait_ms <= 1000, f"--batch-wait-ms must be in [0, 1000], got {self.batch_wait_ms}"
        )
        problems.need(0 <= self.port <= 65535, f"--port must be in [0, 65535], got {self.port}")
        problems.need(
            self.top_k <= self.decode.n_best, f"--top-k ({self.top_k}) must be at most --n-best ({self.decode.n_best})"
        )
        return problems

    def flag_problems(self, given: set[str]) -> list[str]:
        """Flags of the other mode are refused rather than silently ignored."""
        unused_mode = ONE_SHOT if self.serve else SERVING
        unused = [
            field_flag(item) for item in fields(self) if item.metadata.get("mode") == unused_mode and item.name in given
        ]
        if not unused:
            return []
        if self.serve:
            return [
                f"--serve does not take {', '.join(unused)} (a request carries its own question, context and top_k)"
            ]
        return [f"{', '.join(unused)} only apply with --serve"]
