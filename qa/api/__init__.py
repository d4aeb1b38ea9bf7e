"""The Python API: `qa.api.pipeline.pipeline`, exported as `qa.pipeline`."""
