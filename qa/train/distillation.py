"""Knowledge distillation: a fine-tuned teacher's start and end distributions as soft targets (the
loss is `qa.train.losses.distillation_loss`). The teacher runs under ``torch.inference_mode()`` in the
training precision and never enters DDP or the optimizer.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from qa.errors import QAError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Teacher:
    """A fine-tuned QA model that gives soft targets for the student's windows."""

    def __init__(self, name_or_path: str, device: torch.device) -> None:
        from qa.model.loading import load_qa_model, on_device

        self.name = name_or_path
        self.model = on_device(load_qa_model(name_or_path, require_qa_head=True), device)
        self.model.eval()
        self.model.requires_grad_(False)

    def logits(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {name: tensor for name, tensor in batch.items() if not name.endswith("_positions")}
        with torch.inference_mode():
            outputs = self.model(**inputs)
        # Clones made outside inference mode: autograd may save them for the student's backward pass.
        return outputs.start_logits.clone(), outputs.end_logits.clone()


def check_same_tokenizer(
    teacher_tokenizer: PreTrainedTokenizerBase, student_tokenizer: PreTrainedTokenizerBase, teacher: str, student: str
) -> None:
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


def _fingerprint(tokenizer: PreTrainedTokenizerBase) -> Any:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return sorted(tokenizer.get_vocab().items())
    described = json.loads(backend.to_str())
    return {key: described.get(key) for key in ("normalizer", "pre_tokenizer", "model", "added_tokens")}
