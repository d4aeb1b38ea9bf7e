"""Layer 2, runtime: where the computation runs (device, precision, the torchrun process group). Used by
eval, train and serve; imports config only; a sibling of data and model."""
