"""Knowledge distillation: a fine-tuned teacher's start and end distributions as soft targets.

The loss of a micro-batch is ``alpha * T^2 * KL(teacher || student) + (1 - alpha) * span loss``
over the start and end distributions at temperature ``T`` (Hinton et al.; the T^2 keeps the soft
targets' gradients on the scale of the hard ones as T changes), with padding positions masked out
exactly as in the span loss. The CLS position is an ordinary position, so SQuAD v2's "no answer"
is distilled too. The teacher runs under ``torch.inference_mode()`` in the training precision and
never enters DDP or the optimizer.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from qa.errors import QAError

PADDING_LOGIT = -1e4  # the same masking value as the span loss: padding gets no probability


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


class Teacher:
    """A fine-tuned QA model that gives soft targets for the student's windows."""

    def __init__(self, name_or_path: str, device: torch.device) -> None:
        from qa.model.loading import load_qa_model

        self.name = name_or_path
        self.model = load_qa_model(name_or_path, require_qa_head=True).to(device)
        self.model.eval()
        self.model.requires_grad_(False)

    def logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {name: tensor for name, tensor in batch.items() if not name.endswith("_positions")}
        with torch.inference_mode():
            outputs = self.model(**inputs)
        # Clones made outside inference mode: autograd may save them for the student's backward pass.
        return outputs.start_logits.clone(), outputs.end_logits.clone()


def check_same_tokenizer(teacher_tokenizer: Any, student_tokenizer: Any, teacher: str, student: str) -> None:
    """Distillation compares logits position by position, so teacher and student must tokenize alike."""
    ours, theirs = _fingerprint(student_tokenizer), _fingerprint(teacher_tokenizer)
    if ours == theirs:
        return
    vocabulary = student_tokenizer.get_vocab()
    other = teacher_tokenizer.get_vocab()
    differing = len(set(vocabulary.items()) ^ set(other.items()))
    what = f"{differing} vocabulary entries differ" if differing else "the same vocabulary, normalised differently"
    raise QAError(
        f"--teacher {teacher}: its tokenizer is not the student's ({student}): {what}; distillation compares the "
        "two models' logits token by token, so both must use the same tokenizer"
    )


def _fingerprint(tokenizer: Any) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return sorted(tokenizer.get_vocab().items())
    described = json.loads(backend.to_str())
    return {key: described.get(key) for key in ("normalizer", "pre_tokenizer", "model", "added_tokens")}
