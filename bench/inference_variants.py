"""Candidate inference paths against this project's fp32 path, on the same windows, in one run.

For each variant: inference seconds, speed-up, answers identical to fp32, EM/F1, on the first N
questions of dev-v1.1-part1.json at 384/128 (the same windows, batching and decoding as
evaluate.py; only the model call differs). Variants:

  int8-torch        dynamic int8, per-channel weights, every Linear but the QA head (torch.ao)
  int8-torch-ffn    the same, feed-forward Linears only
  bf16-weights      the whole model cast to bf16
  eager-attention   transformers' eager attention instead of SDPA
  onnx-fp32         ONNX Runtime, the exported graph as is
  onnx-fp32-fused   ONNX Runtime after onnxruntime.transformers' BERT fusions
  onnx-int8         ONNX Runtime dynamic int8, per-channel weights, QA head kept in fp32

The ONNX variants need `pip install onnxruntime onnx` (not project dependencies).

    PYTHONPATH=. python bench/inference_variants.py --ckpt FINE_TUNED_DIR [--variants ...] [--questions 1000]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import types
from pathlib import Path
from typing import Any

import torch

from qa.config.settings import WindowSettings
from qa.data.loading import load_examples
from qa.eval.evaluator import AnswerSettings, Timings, answer_examples
from qa.eval.metrics import squad_scores
from qa.model.loading import load_qa_model, load_tokenizer
from qa.runtime.device import Runtime

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "data" / "squad-v1.1" / "dev-v1.1-part1.json"
INPUTS = ["input_ids", "token_type_ids", "attention_mask"]
VARIANTS = [
    "int8-torch",
    "int8-torch-ffn",
    "bf16-weights",
    "eager-attention",
    "onnx-fp32",
    "onnx-fp32-fused",
    "onnx-int8",
]


class OnnxModel:
    """An ONNX Runtime session that answers like a transformers QA model (start/end logits)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, **batch: torch.Tensor) -> Any:
        start, end = self.session.run(None, {name: batch[name].numpy() for name in INPUTS})
        return types.SimpleNamespace(start_logits=torch.from_numpy(start), end_logits=torch.from_numpy(end))


def export_onnx(model: Any, path: Path) -> None:
    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, token_type_ids: Any, attention_mask: Any) -> Any:
            out = self.model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
            return out.start_logits, out.end_logits

    example = tuple(torch.ones(2, 64, dtype=torch.long) for _ in INPUTS)
    names = [*INPUTS, "start_logits", "end_logits"]
    torch.onnx.export(
        Logits(),
        example,
        str(path),
        input_names=INPUTS,
        output_names=["start_logits", "end_logits"],
        dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names},
        opset_version=17,
        dynamo=False,
    )


def quantized_torch(model: Any, feed_forward_only: bool) -> Any:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    chosen = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and "qa_outputs" not in name
        and (not feed_forward_only or "attention" not in name)
    }
    return quantize_dynamic(copy.deepcopy(model), chosen, dtype=torch.qint8)


def build_variant(name: str, model: Any, ckpt: str, work: Path) -> Any:
    if name == "int8-torch":
        return quantized_torch(model, feed_forward_only=False)
    if name == "int8-torch-ffn":
        return quantized_torch(model, feed_forward_only=True)
    if name == "bf16-weights":
        return copy.deepcopy(model).to(torch.bfloat16)
    if name == "eager-attention":
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(ckpt, attn_implementation="eager").eval()
    exported = work / "model.onnx"
    if not exported.exists():
        export_onnx(model, exported)
    if name == "onnx-fp32":
        return OnnxModel(exported)
    if name == "onnx-fp32-fused":
        from onnxruntime.transformers import optimizer

        fused = optimizer.optimize_model(
            str(exported),
            model_type="bert",
            num_heads=model.config.num_attention_heads,
            hidden_size=model.config.hidden_size,
        )
        fused.save_model_to_file(str(work / "fused.onnx"))
        return OnnxModel(work / "fused.onnx")
    if name == "onnx-int8":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        head = [node.name for node in onnx.load(str(exported)).graph.node if "qa_outputs" in node.name]
        quantize_dynamic(
            str(exported),
            str(work / "int8.onnx"),
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=head,
        )
        return OnnxModel(work / "int8.onnx")
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=VARIANTS)
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.ckpt)
    model = load_qa_model(args.ckpt, require_qa_head=True).eval()
    examples = load_examples(file=str(DEV), for_training=False, max_samples=args.questions)
    golds = {key: list(gold["text"]) for key, gold in zip(examples["id"], examples["answers"])}
    runtime = Runtime(torch.device("cpu"), "fp32")
    settings = AnswerSettings(WindowSettings(max_length=384, stride=128), batch_size=args.batch_size)
    work = Path(tempfile.mkdtemp(prefix="inference-variants-"))

    def run(candidate: Any) -> tuple[float, dict[str, str], dict[str, float]]:
        timings = Timings()
        predictions = answer_examples(candidate, tokenizer, examples, settings, runtime, timings=timings)
        answers = {key: prediction.answer for key, prediction in zip(examples["id"], predictions)}
        return timings.inference, answers, squad_scores(answers, golds)

    print(
        f"{args.questions} questions of {DEV.name}, 384/128, {args.batch_size} windows per pass, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()})"
    )
    print("| variant | inference | vs fp32 | answers identical to fp32 | EM | F1 |")
    print("| --- | --- | --- | --- | --- | --- |")
    base_seconds, base_answers, scores = run(model)
    print(
        f"| fp32, SDPA (evaluate.py) | {base_seconds:.1f} s | 1.00x | {len(base_answers)}/{len(base_answers)} "
        f"| {scores['exact_match']:.2f} | {scores['f1']:.2f} |",
        flush=True,
    )
    for name in args.variants:
        seconds, answers, scores = run(build_variant(name, model, args.ckpt, work))
        same = sum(answers[key] == base_answers[key] for key in base_answers)
        print(
            f"| {name} | {seconds:.1f} s | {base_seconds / seconds:.2f}x | {same}/{len(base_answers)} "
            f"| {scores['exact_match']:.2f} | {scores['f1']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
