"""Extractive question answering (SQuAD-style) with a hand-written PyTorch loop.

Modules, one idea each:
  settings    settings shared by every command (windows, decoding, precisions), defined once
  config      one dataclass per command (train, evaluate, predict): its fields are its flags
  cli         flags made from the config dataclasses; one parse-and-validate path
  errors      one-line user errors and the exit codes of the entry scripts
  data        raw examples from the hub or local SQuAD / flat files, validated
  features    question/context windows with answer labels and offsets, for a batch of examples
  windows     whole splits as ragged arrays, and the training-window cache
  batching    the order of training batches, each rank's share, padding a batch
  modeling    loading models and tokenizers, refusing incomplete or unfit ones
  inference   batched forward passes over windows, sharded under torchrun
  decoding    n-best span decoding across the windows of each example
  metrics     SQuAD exact match and F1 (also as an offline `evaluate` module)
  evaluation  the one evaluator used by evaluate.py, train.py and predict.py
  runtime     device, precision (autocast) and the torchrun process group
  checkpoint  every file train.py writes, written atomically, and reading them back
  training    the training recipe: setup helpers and the loop
  *_cmd       the three entry scripts' main functions
"""

__version__ = "0.2.0"
