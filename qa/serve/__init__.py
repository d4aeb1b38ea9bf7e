"""Layer 4, serve: the HTTP API of predict.py --serve (request model, batcher, app, server, page).
Never imports qa.train."""
