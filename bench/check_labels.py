"""Check every training label on a real SQuAD file against the gold answers.

Prints the number of windows, of windows holding the whole answer, of labels
whose text equals the gold answer exactly, and of broken labels (start > end or
outside the context), and of answers whose boundary falls inside a token (the label then covers the
whole token, so its text is longer than the gold answer).

    python bench/check_labels.py --model PATH --file ../shared/data/squad-v1.1/train-v1.1-first44.json
"""

from __future__ import annotations

import argparse
import time

from transformers import AutoTokenizer

from qa.config.settings import WindowSettings
from qa.data.features import prepare_train_features
from qa.data.loading import load_examples


def audit(examples, enc_offsets, sequence_ids_of, mapping, starts, ends, cls_positions):
    windows = len(starts)
    inside = exact = broken = inside_token = 0
    for w in range(windows):
        if starts[w] == cls_positions[w] and ends[w] == cls_positions[w]:
            continue
        inside += 1
        seq = sequence_ids_of(w)
        if starts[w] > ends[w] or seq[starts[w]] != 1 or seq[ends[w]] != 1:
            broken += 1
            continue
        ex = mapping[w]
        context = examples["context"][ex]
        offsets = enc_offsets[w]
        gold = examples["answers"][ex]["text"][0]
        if context[offsets[starts[w]][0] : offsets[ends[w]][1]] == gold:
            exact += 1
        answer_start = examples["answers"][ex]["answer_start"][0]
        if offsets[starts[w]][0] < answer_start or offsets[ends[w]][1] > answer_start + len(gold.rstrip()):
            inside_token += 1
    return windows, inside, exact, broken, inside_token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--file", default="../shared/data/squad-v1.1/train-v1.1-first44.json")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples = load_examples(file=args.file, for_training=True)[:]

    started = time.perf_counter()
    ours = prepare_train_features(examples, tokenizer, WindowSettings(args.max_length, args.stride))
    seconds = time.perf_counter() - started
    enc = tokenizer(
        [q.strip() for q in examples["question"]],
        examples["context"],
        truncation="only_second",
        max_length=args.max_length,
        stride=args.stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
    )
    assert enc["input_ids"] == ours["input_ids"], "windows differ from a plain tokenizer call"
    cls = [ids.index(tokenizer.cls_token_id) for ids in ours["input_ids"]]
    row = audit(
        examples,
        enc["offset_mapping"],
        enc.sequence_ids,
        enc["overflow_to_sample_mapping"],
        ours["start_positions"],
        ours["end_positions"],
        cls,
    )
    print(
        f"project rule:   windows={row[0]} answer_inside={row[1]} label_text_equals_gold={row[2]} broken={row[3]} "
        f"boundary_inside_a_token={row[4]} ({seconds:.1f}s)"
    )


if __name__ == "__main__":
    main()
