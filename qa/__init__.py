"""Extractive question answering (SQuAD-style) with a hand-written PyTorch loop.

Modules, one idea each (imports point down this list's dependencies, never back at a command):
  settings      settings shared by every command (windows, decoding, precisions), defined once
  config        one dataclass per command (train, evaluate, predict): its fields are its flags
  cli           flags made from the config dataclasses (with run_qa.py's spellings); one parse path; --config
  files         the names of the files the commands write and the keys they store; JSON reading/writing
  errors        one-line user errors and the exit codes of the entry scripts
  text          the one rule for text at every entry point (UTF-8, BOM, lone surrogates, empty text)
  questions     one question to answer, read from the command line, a JSON Lines file or an HTTP body
  data          raw examples from the hub or local SQuAD / flat files, validated
  features      question/context windows with answer labels and offsets, for a batch of examples
  windows       whole splits as ragged arrays, their layout helpers, and the training-window cache
  batching      the order of training batches, each rank's share, padding a batch
  hub           failing fast when the hub cannot be reached
  modeling      loading models and tokenizers, refusing incomplete or unfit ones
  inference     batched forward passes over windows, sharded under torchrun
  decoding      n-best span decoding across the windows of each example
  metrics       SQuAD v1.1 / v2.0 exact match and F1 (also as an offline `evaluate` module)
  evaluation    the one evaluator used by evaluate.py, train.py, predict.py and the server
  answering     a checkpoint made ready to answer, and the JSON shape of its answers
  runtime       device, precision (autocast) and the torchrun process group
  checkpoint    every file train.py writes, written atomically, and reading them back
  selection     the best evaluation of a run and early stopping (pure bookkeeping)
  reporting     what a run tells as it goes: stderr, train_log.jsonl, TensorBoard
  model_card    the model card and the training-curves picture of a finished run
  distillation  a teacher's soft targets and the distillation loss (also the plain span loss)
  student       a smaller student: keep N evenly spaced layers of a model
  training      the training recipe: setup helpers and the loop
  serving       the HTTP server (predict.py --serve) and its page
  *_cmd         the three entry scripts' main functions
"""

__version__ = "0.3.0"
