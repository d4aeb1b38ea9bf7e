"""Layer 4, train: the training recipe and its loop, checkpoints, the best model and early stopping,
what a run reports, its model card, and distillation. Never imports qa.serve."""
