"""Layer 2, model: loading models and tokenizers strictly, the null threshold stored with the weights,
students made of fewer layers, and the runtime (device, precision, torchrun). Never imports qa.data."""
