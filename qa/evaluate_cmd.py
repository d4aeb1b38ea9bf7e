"""`python evaluate.py --ckpt PATH`: exact match and F1 of a checkpoint on a validation set."""

from __future__ import annotations

import argparse
from pathlib import Path

from qa.cli_args import ArgumentParser, add_answer_flags, answer_settings, positive_int
from qa.errors import QAError, exit_on_qa_error


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="evaluate.py", description="SQuAD exact match / F1 of a question-answering checkpoint."
    )
    model = parser.add_argument_group("model")
    model.add_argument("--ckpt", default="finetuned-squad", help="checkpoint directory (train.py output) or hub id")
    model.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "fp16"],
        help="autocast dtype on CUDA (auto: bf16 where supported, else fp16); CPU runs fp32",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="squad", help="hub dataset name")
    data.add_argument("--split", default="validation", help="hub dataset split")
    data.add_argument("--validation-file", help="local SQuAD JSON / JSON lines / CSV / Parquet file instead of the hub")
    data.add_argument("--max-eval-samples", type=positive_int, help="evaluate the first N examples only")
    windows = parser.add_argument_group("windows and decoding")
    add_answer_flags(windows, batch_size=64)
    output = parser.add_argument_group("output")
    output.add_argument("--output-dir", type=Path, help="where to write the result files (default: the checkpoint)")
    output.add_argument("--save-nbest", action="store_true", help="also write nbest_predictions.json")
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


@exit_on_qa_error
def main(argv: list[str] | None = None) -> dict | None:
    args = build_parser().parse_args(argv)
    from qa.data import load_examples
    from qa.evaluation import evaluate_examples
    from qa.modeling import load_qa_model, load_tokenizer
    from qa.runtime import setup_runtime, shutdown

    settings = answer_settings(args)
    output_dir = args.output_dir or (Path(args.ckpt) if Path(args.ckpt).is_dir() else Path("evaluation"))
    if output_dir.exists() and not output_dir.is_dir():
        raise QAError(f"--output-dir {output_dir} is a file, not a directory")

    runtime = setup_runtime(args.precision)
    tokenizer = load_tokenizer(args.ckpt)
    model = load_qa_model(args.ckpt, require_qa_head=True).to(runtime.device)
    examples = load_examples(
        args.dataset, args.split, args.validation_file, for_training=False, max_samples=args.max_eval_samples
    )
    metrics = evaluate_examples(
        model,
        tokenizer,
        examples,
        settings,
        runtime,
        output_dir,
        save_nbest=args.save_nbest,
        progress=not args.no_progress,
    )
    shutdown(runtime)
    if metrics is not None:
        print(
            f"exact_match = {metrics['exact_match']:.2f}  f1 = {metrics['f1']:.2f}  "
            f"({metrics['num_examples']} examples, {metrics['num_windows']} windows; results in {output_dir})"
        )
    return metrics
