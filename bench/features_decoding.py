"""Feature preparation throughput and span-decoding time on real SQuAD files.

Prints windows per second for training and evaluation feature preparation
(`prepare_train_features` / `prepare_eval_features` through the ragged window
builders) and the time to decode every example of the dev file, vectorised and
with the plain per-window loop of the reference recipe, on the same logits
(random normal values: decoding cost does not depend on them).

    python bench/features_decoding.py --model PATH_TO_MODEL_DIR
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from transformers import AutoTokenizer

from qa.config.settings import DecodeSettings, WindowSettings
from qa.data.loading import load_examples
from qa.data.windows import build_eval_windows, build_train_windows
from qa.eval.decoding import decode_windows


def plain_loop_decode(windows, start_flat, end_flat, n_best=20, max_answer_length=30):
    """The reference notebook's decoding: a Python loop over windows and n-best pairs."""
    starts = windows.starts
    best = {}
    for w in range(len(windows)):
        s, n = starts[w], windows.lengths[w]
        start_logits, end_logits = start_flat[s : s + n], end_flat[s : s + n]
        offsets = windows.offsets[s : s + n]
        example = windows.window_example[w]
        for i in np.argsort(start_logits)[-1 : -n_best - 1 : -1]:
            for j in np.argsort(end_logits)[-1 : -n_best - 1 : -1]:
                if offsets[i][0] < 0 or offsets[j][0] < 0 or j < i or j - i + 1 > max_answer_length:
                    continue
                score = start_logits[i] + end_logits[j]
                if example not in best or score > best[example][0]:
                    best[example] = (score, windows.contexts[example][offsets[i][0] : offsets[j][1]])
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--train-file", default="../shared/data/squad-v1.1/train-v1.1-first44.json")
    parser.add_argument("--dev-file", default="../shared/data/squad-v1.1/dev-v1.1-part1.json")
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--stride", type=int, default=128)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    train = load_examples(file=args.train_file, for_training=True)
    dev = load_examples(file=args.dev_file, for_training=False)

    began = time.perf_counter()
    train_windows = build_train_windows(train, tokenizer, WindowSettings(args.max_length, args.stride))
    seconds = time.perf_counter() - began
    print(
        f"train features: {len(train)} examples -> {len(train_windows)} windows in {seconds:.2f}s "
        f"= {len(train_windows) / seconds:,.0f} windows/s"
    )

    began = time.perf_counter()
    eval_windows = build_eval_windows(dev, tokenizer, WindowSettings(args.max_length, args.stride))
    seconds = time.perf_counter() - began
    print(
        f"eval features:  {len(dev)} examples -> {len(eval_windows)} windows in {seconds:.2f}s "
        f"= {len(eval_windows) / seconds:,.0f} windows/s"
    )

    rng = np.random.default_rng(0)
    start_flat = rng.normal(size=len(eval_windows.input_ids)).astype(np.float32)
    end_flat = rng.normal(size=len(eval_windows.input_ids)).astype(np.float32)
    began = time.perf_counter()
    predictions = decode_windows(eval_windows, start_flat, end_flat, DecodeSettings())
    vectorised = time.perf_counter() - began
    began = time.perf_counter()
    reference = plain_loop_decode(eval_windows, start_flat, end_flat)
    loop = time.perf_counter() - began
    agree = sum(predictions[e].text == reference.get(e, (0, ""))[1] for e in range(len(predictions)))
    print(
        f"decoding {len(predictions)} examples / {len(eval_windows)} windows: vectorised {vectorised:.2f}s, "
        f"plain per-window loop {loop:.2f}s ({loop / vectorised:.0f}x); same answer for {agree}/{len(predictions)}"
    )


if __name__ == "__main__":
    main()
