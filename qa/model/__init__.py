"""Layer 2, model: loading models and tokenizers strictly, the null threshold stored with the weights,
and students made of fewer layers. Never imports qa.data or qa.runtime."""
