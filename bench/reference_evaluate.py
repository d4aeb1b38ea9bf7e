"""The reference evaluation path, for comparison: windows padded to 384, `Trainer.predict`,
then the notebook's post-processing loop that reads one dataset row at a time.

Scores with this project's offline SQuAD v1.1 module (the notebook's hub metric
needs the network); prints EM/F1 and timings as JSON. Needs `accelerate`.

    python bench/reference_evaluate.py --ckpt DIR --validation-file FILE --max-eval-samples 1000
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time

import numpy as np
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer, TrainingArguments

from qa.data.loading import load_examples
from qa.eval.metrics import load_squad_metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--validation-file", required=True)
    parser.add_argument("--max-eval-samples", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    args = parser.parse_args()
    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.ckpt)
    model = AutoModelForQuestionAnswering.from_pretrained(args.ckpt)
    examples = load_examples(file=args.validation_file, for_training=False, max_samples=args.max_eval_samples)

    def prepare_validation_features(batch):
        batch["question"] = [q.lstrip() for q in batch["question"]]
        tokenized = tokenizer(
            batch["question"],
            batch["context"],
            truncation="only_second",
            max_length=args.max_length,
            stride=args.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
        )
        sample_mapping = tokenized.pop("overflow_to_sample_mapping")
        tokenized["example_id"] = []
        for i in range(len(tokenized["input_ids"])):
            sequence_ids = tokenized.sequence_ids(i)
            tokenized["example_id"].append(batch["id"][sample_mapping[i]])
            tokenized["offset_mapping"][i] = [
                (o if sequence_ids[k] == 1 else None) for k, o in enumerate(tokenized["offset_mapping"][i])
            ]
        return tokenized

    features = examples.map(prepare_validation_features, batched=True, remove_columns=examples.column_names)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=tempfile.mkdtemp(),
            per_device_eval_batch_size=args.batch_size,
            report_to="none",
            disable_tqdm=True,
        ),
        processing_class=tokenizer,
    )
    inference_began = time.perf_counter()
    raw = trainer.predict(features.remove_columns(["example_id", "offset_mapping"]))
    all_start_logits, all_end_logits = raw.predictions[:2]
    inference = time.perf_counter() - inference_began

    decode_began = time.perf_counter()
    example_id_to_index = {k: i for i, k in enumerate(examples["id"])}
    features_per_example = collections.defaultdict(list)
    for i, feature in enumerate(features):
        features_per_example[example_id_to_index[feature["example_id"]]].append(i)
    predictions = collections.OrderedDict()
    for example_index, example in enumerate(examples):
        valid_answers = []
        context = example["context"]
        for feature_index in features_per_example[example_index]:
            start_logits = all_start_logits[feature_index]
            end_logits = all_end_logits[feature_index]
            offset_mapping = features[feature_index]["offset_mapping"]
            start_indexes = np.argsort(start_logits)[-1 : -20 - 1 : -1].tolist()
            end_indexes = np.argsort(end_logits)[-1 : -20 - 1 : -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    if (
                        start_index >= len(offset_mapping)
                        or end_index >= len(offset_mapping)
                        or offset_mapping[start_index] is None
                        or offset_mapping[end_index] is None
                    ):
                        continue
                    if end_index < start_index or end_index - start_index + 1 > 30:
                        continue
                    start_char, end_char = offset_mapping[start_index][0], offset_mapping[end_index][1]
                    valid_answers.append(
                        {
                            "score": start_logits[start_index] + end_logits[end_index],
                            "text": context[start_char:end_char],
                        }
                    )
        best = max(valid_answers, key=lambda x: x["score"]) if valid_answers else {"text": ""}
        predictions[example["id"]] = best["text"]
    decoding = time.perf_counter() - decode_began
    metric = load_squad_metric().compute(
        predictions=[{"id": k, "prediction_text": v} for k, v in predictions.items()],
        references=[{"id": ex["id"], "answers": ex["answers"]} for ex in examples],
    )
    print(
        json.dumps(
            {
                **metric,
                "windows": len(features),
                "inference_s": inference,
                "decoding_s": decoding,
                "in_process_s": time.perf_counter() - began,
            }
        )
    )


if __name__ == "__main__":
    main()
