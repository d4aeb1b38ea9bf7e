"""A smaller student made from a pretrained encoder: keep N of its transformer layers.

This is DistilBERT's initialisation: the student starts as the teacher-sized model with only some
of its layers, evenly spaced and including the first and the last (12 -> 6 keeps 0, 2, 4, 7, 9, 11).
The result is an ordinary model of the same class with a smaller layer count in its config, so
``save_pretrained`` writes a directory that ``AutoModelForQuestionAnswering`` loads like any other.
"""

from __future__ import annotations

from typing import Any

import torch

from qa.errors import QAError

# Where the layer list sits below the base model: BERT and RoBERTa, DistilBERT, and most others.
LAYER_LISTS = ("encoder.layer", "transformer.layer", "encoder.layers", "layers")
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layers", "num_layers")


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """``keep`` layer indices out of ``total``, evenly spaced, the first and the last among them (one: the first)."""
    if keep == 1:
        return [0]
    return [round(index * (total - 1) / (keep - 1)) for index in range(keep)]


def layer_count(config: Any) -> int | None:
    for key in LAYER_COUNT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def check_student_layers(config: Any, keep: int, model_name: str) -> None:
    """Refuse, before any work, a layer count the model cannot give."""
    total = layer_count(config)
    if total is None:
        raise QAError(f"--student-layers: cannot find the number of layers of {model_name} in its config")
    if not 1 <= keep <= total:
        raise QAError(f"--student-layers {keep}: {model_name} has {total} layers; choose from 1 to {total}")


def shrink_to_layers(model: torch.nn.Module, keep: int, model_name: str) -> list[int]:
    """Keep ``keep`` evenly spaced layers of ``model`` (in place); returns the indices kept."""
    owner, attribute, layers = _find_layer_list(model, model_name)
    total = len(layers)
    check_student_layers(model.config, keep, model_name)
    indices = evenly_spaced_layers(total, keep)
    kept = torch.nn.ModuleList([layers[index] for index in indices])
    for position, layer in enumerate(kept):
        for module in layer.modules():  # attention caches are keyed by the layer's position
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = position  # type: ignore[assignment]  # stubs: a Module attribute is a Tensor or Module
    setattr(owner, attribute, kept)
    for key in LAYER_COUNT_KEYS:
        if isinstance(getattr(model.config, key, None), int):
            setattr(model.config, key, keep)
    for key, value in list(vars(model.config).items()):
        if isinstance(value, list) and len(value) == total:  # per-layer settings such as layer_types
            setattr(model.config, key, [value[index] for index in indices])
    return indices


def _find_layer_list(model: torch.nn.Module, model_name: str) -> tuple[Any, str, torch.nn.ModuleList]:
    base = getattr(model, "base_model", model)
    for path in LAYER_LISTS:
        owner = base
        *parents, attribute = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent, None)
        layers = getattr(owner, attribute, None) if owner is not None else None
        if isinstance(layers, torch.nn.ModuleList) and len(layers) == layer_count(model.config):
            return owner, attribute, layers
    raise QAError(
        f"--student-layers: no list of transformer layers found in {model_name} ({type(model).__name__}); "
        f"looked for {', '.join(LAYER_LISTS)} below its base model"
    )
