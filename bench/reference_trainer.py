"""The reference recipe, for comparison: Hugging Face `Trainer`, every window padded to max_length.

Follows the reference notebook (questions lstripped, truncation="only_second",
padding="max_length", its labelling loop, `default_data_collator`, AdamW with
weight decay 0.01 and a linear schedule inside `Trainer`). Needs `accelerate`
(pip install accelerate), which the project itself does not.

    python bench/reference_trainer.py --model PATH --train-file FILE --max-steps 40 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import time

from transformers import (
    AutoModelForQuestionAnswering,
    AutoTokenizer,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from qa.data.loading import load_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train-file", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    args = parser.parse_args()
    began = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    raw = load_examples(file=args.train_file, for_training=True)

    def prepare_train_features(examples):
        examples["question"] = [q.lstrip() for q in examples["question"]]
        tokenized = tokenizer(
            examples["question"],
            examples["context"],
            truncation="only_second",
            max_length=args.max_length,
            stride=args.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="max_length",
        )
        sample_mapping = tokenized.pop("overflow_to_sample_mapping")
        offset_mapping = tokenized.pop("offset_mapping")
        tokenized["start_positions"], tokenized["end_positions"] = [], []
        for i, offsets in enumerate(offset_mapping):
            input_ids = tokenized["input_ids"][i]
            cls_index = input_ids.index(tokenizer.cls_token_id)
            sequence_ids = tokenized.sequence_ids(i)
            answers = examples["answers"][sample_mapping[i]]
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            token_start_index = 0
            while sequence_ids[token_start_index] != 1:
                token_start_index += 1
            token_end_index = len(input_ids) - 1
            while sequence_ids[token_end_index] != 1:
                token_end_index -= 1
            if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
                tokenized["start_positions"].append(cls_index)
                tokenized["end_positions"].append(cls_index)
            else:
                while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                    token_start_index += 1
                tokenized["start_positions"].append(token_start_index - 1)
                while offsets[token_end_index][1] >= end_char:
                    token_end_index -= 1
                tokenized["end_positions"].append(token_end_index + 1)
        return tokenized

    train = raw.map(prepare_train_features, batched=True, remove_columns=raw.column_names)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        learning_rate=2e-5,
        weight_decay=0.01,
        max_steps=args.max_steps,
        save_strategy="no",
        report_to="none",
        logging_steps=10,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train,
        data_collator=default_data_collator,
        processing_class=tokenizer,
    )
    result = trainer.train()
    trainer.save_model(args.output_dir)
    print(
        json.dumps(
            {
                "windows": len(train),
                "train_samples_per_second": result.metrics["train_samples_per_second"],
                "train_runtime": result.metrics["train_runtime"],
                "in_process_seconds": time.perf_counter() - began,
            }
        )
    )


if __name__ == "__main__":
    main()
