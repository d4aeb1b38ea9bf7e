"""The loss of train.py --distractors: a softmax shared by all windows of one question.

A question is trained with its own paragraph and K other paragraphs of its article. Each window's
own softmax would teach every window to find an answer, so scores of different passages would mean
nothing next to each other. Shared normalisation (Clark and Gardner, 2018, "Simple and Effective
Multi-Paragraph Reading Comprehension") normalises the start (and the end) scores over every real
token of every window of the question together: the loss is ``-log`` of the probability mass on the
answer's positions (summed over the windows that hold it), so a distractor's spans lose mass to the
right passage and raw scores become comparable across passages, which is how `qa.eval.passages`
ranks them. A question whose windows hold no answer (SQuAD v2, or an answer that no window holds
whole) puts its mass on the CLS positions of all its windows.
"""

from __future__ import annotations

from typing import Any

import torch

from qa.data.batching import GROUP_KEY
from qa.train.distillation import masked_logits


def shared_norm_loss(outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the batch's questions of the shared-softmax cross-entropy, start and end averaged."""
    mask, groups = batch["attention_mask"], batch[GROUP_KEY]
    losses = []
    for logits, name in ((outputs.start_logits, "start_positions"), (outputs.end_logits, "end_positions")):
        scores = masked_logits(logits, mask)
        labels = batch[name]
        label_scores = scores.gather(1, labels[:, None]).squeeze(1)
        window_totals = torch.logsumexp(scores, dim=1)
        per_question = []
        for group in torch.unique(groups):
            mine = groups == group
            answered = mine & (labels > 0)  # CLS sits at position 0: a label there means "not in this window"
            targets = answered if bool(answered.any()) else mine
            per_question.append(torch.logsumexp(window_totals[mine], 0) - torch.logsumexp(label_scores[targets], 0))
        losses.append(torch.stack(per_question).mean())
    return (losses[0] + losses[1]) / 2
