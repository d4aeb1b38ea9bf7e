"""Layer 3, eval: batched inference over windows, span decoding, scoring with the official SQuAD
rules, and a checkpoint made ready to answer. The one evaluator every command and the server use."""
