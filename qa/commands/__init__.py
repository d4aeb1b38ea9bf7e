"""Layer 5, commands: the main functions of train.py, evaluate.py and predict.py. Nothing imports them."""
