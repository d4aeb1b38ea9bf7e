"""Exact spans of every encoder family on real SQuAD data: labels and offsets, the project's rule
against the tokenizer's raw offsets, in one run.

For each family of tests/families.py, a tokenizer of its kind is trained on the contexts of one
shared file (not on the test corpus) and the questions of another are cut into windows. Printed per
family: windows, labels holding the answer, labels whose text equals the gold answer exactly, labels
whose gold boundary falls inside a token (their text is necessarily longer), labels and context tokens
with white space at an edge (must be 0), and the same two counts under the raw offsets.

    PYTHONPATH=. python bench/family_spans.py --train ../shared/data/squad-v1.1/train-v1.1-first44.json \
        --file ../shared/data/squad-v1.1/dev-v1.1-part1.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from families import FAMILIES, make_family_tokenizer  # noqa: E402

from qa.config.settings import WindowSettings  # noqa: E402
from qa.data.features import _encode_windows, context_offsets, covering_token_span  # noqa: E402
from qa.data.loading import load_examples  # noqa: E402


def _edge_space(text: str) -> bool:
    return bool(text) and (text[0].isspace() or text[-1].isspace())


def audit(examples: dict, tokenizer, window: WindowSettings) -> dict[str, int]:
    encoded, context_index = _encode_windows(examples, tokenizer, window)
    counts = dict.fromkeys(
        ["windows", "answer_inside", "exact", "boundary_in_token", "edge_space_labels", "edge_space_tokens"], 0
    )
    counts.update(raw_edge_space_labels=0, raw_edge_space_tokens=0)
    for row, example in enumerate(encoded["overflow_to_sample_mapping"]):
        counts["windows"] += 1
        context = examples["context"][example]
        answer = examples["answers"][example]
        gold, begin = (
            answer["text"][0].strip(),
            answer["answer_start"][0] + answer["text"][0].index(answer["text"][0].strip()),
        )
        sequence_ids = encoded.sequence_ids(row)
        raw = [o if s == context_index else None for o, s in zip(encoded["offset_mapping"][row], sequence_ids)]
        exact = context_offsets(context, encoded["offset_mapping"][row], sequence_ids, context_index)
        counts["edge_space_tokens"] += sum(_edge_space(context[a:b]) for a, b in filter(None, exact))
        counts["raw_edge_space_tokens"] += sum(_edge_space(context[a:b]) for a, b in filter(None, raw))
        span = covering_token_span(exact, begin, begin + len(gold))
        if span is None:
            continue
        counts["answer_inside"] += 1
        text = context[exact[span[0]][0] : exact[span[1]][1]]
        counts["exact"] += text == gold
        counts["boundary_in_token"] += text != gold and gold in text
        counts["edge_space_labels"] += _edge_space(text)
        raw_span = covering_token_span([o if o is None or o[0] < o[1] else None for o in raw], begin, begin + len(gold))
        if raw_span is not None:
            counts["raw_edge_space_labels"] += _edge_space(context[raw[raw_span[0]][0] : raw[raw_span[1]][1]])
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="../shared/data/squad-v1.1/train-v1.1-first44.json")
    parser.add_argument("--file", default="../shared/data/squad-v1.1/dev-v1.1-part1.json")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    args = parser.parse_args()
    texts = sorted(set(load_examples(file=args.train, for_training=True)["context"]))
    examples = load_examples(file=args.file, for_training=True)[:]
    window = WindowSettings(args.max_length, args.stride)
    print(
        f"tokenizers trained on {len(texts)} contexts of {args.train}; {len(examples['id'])} questions of {args.file}"
    )
    header = ["family", "windows", "answer_inside", "exact", "boundary_in_token", "edge_space_labels"]
    header += ["edge_space_tokens", "raw_edge_space_labels", "raw_edge_space_tokens", "seconds"]
    print(" | ".join(header))
    for name in args.families:
        began = time.perf_counter()
        tokenizer = make_family_tokenizer(name, texts)
        counts = audit(examples, tokenizer, window)
        values = [counts[key] for key in header[1:-1]]
        print(" | ".join([name, *map(str, values), f"{time.perf_counter() - began:.1f}"]), flush=True)


if __name__ == "__main__":
    main()
