"""Extractive question answering (SQuAD-style) with a hand-written PyTorch loop.

Modules, one idea each:
  data       raw examples from the hub or local SQuAD / flat files, validated
  features   question/context windows with answer labels and offsets
  decoding   n-best span decoding across the windows of each example
  metrics    SQuAD v1.1 exact match and F1 (also as an `evaluate` module)
  inference  batched model forward passes over windows
  evaluation the one evaluator used by evaluate.py, train.py and predict.py
  training   the training loop, checkpoints and resume
"""

__version__ = "0.1.0"
