"""Exact match / F1 of a checkpoint: python evaluate.py --ckpt PATH (see --help).

This file shadows the `evaluate` library for code run from the repository root;
qa.eval.metrics.import_evaluate_library imports the real library around it.
"""

from qa.commands.evaluate import main

if __name__ == "__main__":
    main()
