"""Extractive question answering (SQuAD-style) with a hand-written PyTorch loop.

Layers, each a sub-package that imports only itself, the base modules and lower layers
(docs/design.md draws them; tests/test_layout.py checks them):

  base      errors, files (run file names, JSON, atomic writes), text (the one text rule), hub
  config    the command dataclasses, grouped, and the command line made from them
  data      examples, questions, windows, batches           | model  loading, carried, student | runtime
  eval      inference, decoding, scoring, metrics, answering
  train     recipe, loop, optimization, checkpoints, ...    | serve  api, batcher, app, server, page
                                                            | api    pipeline: the Python entry point
  commands  train.py / evaluate.py / predict.py main functions (nothing imports them)

``from qa import pipeline`` is the Python entry point (`qa.api.pipeline`), imported when first used so
that ``import qa`` stays free of torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.3.0"
__all__ = ["pipeline"]


def __getattr__(name: str) -> Any:
    if name == "pipeline":
        from qa.api.pipeline import pipeline

        return pipeline
    raise AttributeError(f"module 'qa' has no attribute {name!r}")
