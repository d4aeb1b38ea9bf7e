"""Layer 2, data: examples from the hub or local files, the questions of predict.py and the server,
question/context windows with labels and offsets, and training batches. Never imports qa.model."""
