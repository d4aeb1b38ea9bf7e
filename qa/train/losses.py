"""The training losses: the span loss, the distillation loss and the shared-softmax loss of
train.py --distractors. Each masks padding, so that a loss depends on the data alone, not on how a batch
happens to be padded (and so not on the number of devices).

Distillation: ``alpha * T^2 * KL(teacher || student) + (1 - alpha) * span loss`` over the start and end
distributions at temperature ``T`` (Hinton et al.; the T^2 keeps the soft targets' gradients on the
scale of the hard ones as T changes). The CLS position is an ordinary position, so SQuAD v2's "no
answer" is distilled too.

The shared softmax (--distractors): a question is trained with its own paragraph and K other
paragraphs of its article. Each window's own softmax would teach every window to find an answer, so
scores of different passages would mean nothing next to each other. Shared normalisation (Clark and
Gardner, 2018, "Simple and Effective Multi-Paragraph Reading Comprehension") normalises the start
(and the end) scores over every real token of every window of the question together: the loss is
``-log`` of the probability mass on the answer's positions (summed over the windows that hold it),
so a distractor's spans lose mass to the right passage and raw scores become comparable across
passages, which is how `qa.eval.passages` ranks them. A question whose windows hold no answer (SQuAD
v2, or an answer that no window holds whole) puts its mass on the CLS positions of all its windows.
"""

from __future__ import annotations

from typing import Any

import torch

from qa.data.batching import GROUP_KEY

PADDING_LOGIT = -1e4  # padding gets no probability (finite: fp16 autocast keeps it)


def masked_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return logits.float().masked_fill(attention_mask == 0, PADDING_LOGIT)


def span_loss(outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of the start and end positions, over real tokens only.

    The models' built-in loss also spreads probability over padding positions,
    which would make the loss depend on how a batch happens to be padded (and so
    on the number of devices); masking padding makes it depend on the data alone.
    """
    mask = batch["attention_mask"]
    losses = [
        torch.nn.functional.cross_entropy(masked_logits(logits, mask), batch[name])
        for logits, name in ((outputs.start_logits, "start_positions"), (outputs.end_logits, "end_positions"))
    ]
    return (losses[0] + losses[1]) / 2


def distillation_loss(
    outputs: Any,
    teacher_logits: tuple[torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """``alpha * T^2 * KL(teacher || student) + (1 - alpha) * span loss``, start and end averaged."""
    mask = batch["attention_mask"]
    divergences = []
    for student, teacher in zip((outputs.start_logits, outputs.end_logits), teacher_logits, strict=True):
        student_log_p = torch.log_softmax(masked_logits(student, mask) / temperature, dim=-1)
        teacher_log_p = torch.log_softmax(masked_logits(teacher, mask) / temperature, dim=-1)
        divergences.append(
            torch.nn.functional.kl_div(student_log_p, teacher_log_p, log_target=True, reduction="batchmean")
        )
    soft = (divergences[0] + divergences[1]) / 2
    return alpha * temperature**2 * soft + (1 - alpha) * span_loss(outputs, batch)


_NOT_A_TARGET = -1e30  # finite, so that sums over a group never meet -inf - -inf


def shared_norm_loss(outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over the batch's questions of the shared-softmax cross-entropy, start and end averaged.
    Vectorised over questions (one scatter per reduction, no loop and no device sync per question)."""
    mask = batch["attention_mask"]
    _, groups = torch.unique(batch[GROUP_KEY], return_inverse=True)  # 0 .. questions - 1
    count = len(mask)  # at most one question per window: a bound that needs no device sync
    present = torch.zeros(count, device=mask.device).index_add(0, groups, torch.ones_like(groups, dtype=torch.float))
    present = present > 0
    losses = []
    for logits, name in ((outputs.start_logits, "start_positions"), (outputs.end_logits, "end_positions")):
        scores = masked_logits(logits, mask)
        labels = batch[name]
        label_scores = scores.gather(1, labels[:, None]).squeeze(1)
        answered = labels > 0  # CLS sits at position 0: a label there means "not in this window"
        group_answered = torch.zeros(count, device=mask.device).index_add(0, groups, answered.float()) > 0
        targets = answered | ~group_answered[groups]  # no window holds the answer: all CLS positions
        numerator = _group_logsumexp(torch.where(targets, label_scores, _NOT_A_TARGET), groups, count)
        denominator = _group_logsumexp(torch.logsumexp(scores, dim=1), groups, count)
        per_question = torch.where(present, denominator - numerator, torch.zeros_like(numerator))
        losses.append(per_question.sum() / present.sum())
    return (losses[0] + losses[1]) / 2


def _group_logsumexp(values: torch.Tensor, groups: torch.Tensor, count: int) -> torch.Tensor:
    """logsumexp of ``values`` within each group (``count`` slots; an empty one stays finite)."""
    maxes = torch.full((count,), _NOT_A_TARGET, dtype=values.dtype, device=values.device)
    maxes = maxes.scatter_reduce(0, groups, values.detach(), reduce="amax", include_self=True)
    sums = torch.zeros(count, dtype=values.dtype, device=values.device).index_add(
        0, groups, torch.exp(values - maxes[groups])
    )
    return maxes + torch.log(sums.clamp_min(1e-30))
