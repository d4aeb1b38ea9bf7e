"""Loading question-answering models and their tokenizers, refusing what would answer wrongly.

A model that loads but would give wrong answers with exit status 0 is the worst
outcome, so loading is strict: a local checkpoint must carry its tokenizer files
(a missing ``tokenizer.json`` can otherwise fall back to a tiny vocabulary), a
model claiming to be a QA model must have every weight of its QA head, and the
window length must fit the model's position embeddings.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qa.config.settings import WindowSettings
from qa.errors import QAError, first_line
from qa.hub import hub_unreachable, unreachable_note

if TYPE_CHECKING:  # transformers is imported when a model is loaded, not when the command line is read
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

# Any one of these makes a directory's tokenizer loadable as what it was trained with.
# XLNet's QA class is XLNetForQuestionAnsweringSimple: a suffix test would refuse it.
QA_CLASS_SUFFIX = "ForQuestionAnswering"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def _quiet_transformers() -> None:
    from transformers.utils import logging as transformers_logging

    # Loading bars flash by in well under a second; loading problems are checked below instead.
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The model's fast tokenizer, giving exactly the inputs the model's forward pass takes."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    _check_local_directory(name_or_path)
    directory = Path(name_or_path)
    if directory.is_dir() and not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise QAError(
            f"{name_or_path}: no tokenizer files ({' / '.join(TOKENIZER_FILES)}); the checkpoint is incomplete"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as error:  # OSError, ValueError, and the tokenizers library's own exceptions
        raise QAError(_load_problem(name_or_path, "tokenizer", error)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise QAError(
            f"{name_or_path}: the tokenizer ({type(tokenizer).__name__}) is not a fast (Rust) tokenizer, so it "
            "cannot give the character offsets that answers are cut by"
        )
    try:
        tokenizer("a", "b", return_offsets_mapping=True)
    except Exception as error:  # NotImplementedError and the tokenizers library's own exceptions
        raise QAError(f"{name_or_path}: the tokenizer cannot give character offsets ({error})") from None
    if "token_type_ids" in tokenizer.model_input_names and "token_type_ids" not in model_inputs(
        load_config(name_or_path)
    ):
        # A tokenizer that makes token types for a model whose forward pass has no such argument
        # (ModernBERT's ships the generic class): windows carry exactly what the model takes.
        tokenizer.model_input_names = [name for name in tokenizer.model_input_names if name != "token_type_ids"]
    return tokenizer


def qa_model_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The question-answering class of this config's family, whatever its name ends with
    (XLNet's is ``XLNetForQuestionAnsweringSimple``)."""
    from transformers import AutoModelForQuestionAnswering

    mapping: Any = AutoModelForQuestionAnswering._model_mapping  # a class per config class
    try:
        return mapping[type(config)]
    except KeyError:
        raise QAError(
            f"{getattr(config, 'model_type', type(config).__name__)} models have no question-answering class "
            "in transformers (AutoModelForQuestionAnswering)"
        ) from None


def model_inputs(config: PretrainedConfig) -> set[str]:
    """The arguments of the QA model's forward pass."""
    return set(inspect.signature(qa_model_class(config).forward).parameters)


def position_limit(config: PretrainedConfig) -> int | None:
    """The longest window the model takes, by its own rules; None: no limit.

    A model whose position ids start after the padding index (RoBERTa, XLM-R, CamemBERT, MPNet,
    Longformer, data2vec-text, ...) loses ``padding index + 1`` positions: such models declare the
    padding index on their position embedding, so the rule is read off an empty (meta-device) copy of
    the model instead of a list of families. A limit of -1 or none (XLNet) is no limit.
    """
    import torch

    limit = getattr(config, "max_position_embeddings", None)
    if not isinstance(limit, int) or limit <= 0:
        limit = None
    with torch.device("meta"):
        skeleton = qa_model_class(config)(config)
    for name, module in skeleton.named_modules():
        if (
            isinstance(module, torch.nn.Embedding)
            and name.endswith("position_embeddings")
            and module.padding_idx is not None
        ):
            return module.num_embeddings - module.padding_idx - 1
    return limit


def load_config(name_or_path: str) -> PretrainedConfig:
    from transformers import AutoConfig

    _quiet_transformers()
    _check_local_directory(name_or_path)
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except Exception as error:  # OSError, ValueError, JSON errors
        raise QAError(_load_problem(name_or_path, "model", error)) from None


def check_model_fits(name_or_path: str, window: WindowSettings) -> PretrainedConfig:
    """Refuse window settings the model cannot take, before any work; returns the model config."""
    config = load_config(name_or_path)
    limit = position_limit(config)
    problems = window.model_problems(limit, f"the model {name_or_path}")
    if problems:
        raise QAError("; ".join(problems))
    return config


def load_qa_model(
    name_or_path: str,
    *,
    require_qa_head: bool,
    dtype: torch.dtype | None = None,
    config: PretrainedConfig | None = None,
) -> PreTrainedModel:
    """An `AutoModelForQuestionAnswering`; with ``require_qa_head`` the checkpoint must be a complete QA model.
    ``dtype`` (say torch.bfloat16): the weights are loaded in it, not in fp32 and cast afterwards. ``config``:
    the checkpoint's, where the caller read it already."""
    from transformers import AutoModelForQuestionAnswering

    config = config if config is not None else load_config(name_or_path)
    architectures = config.architectures or []
    is_qa_model = any(QA_CLASS_SUFFIX in name for name in architectures)
    if require_qa_head and not is_qa_model:
        raise QAError(
            f"{name_or_path}: not a question-answering model (architectures: {', '.join(architectures) or 'none'}); "
            "fine-tune it with train.py first"
        )
    # Typed at this function's boundary: transformers' annotations of from_pretrained's keyword arguments
    # (and of its (model, info) return with output_loading_info) do not check as called here.
    auto: Any = AutoModelForQuestionAnswering
    try:
        model, info = auto.from_pretrained(
            name_or_path, config=config, output_loading_info=True, **({"dtype": dtype} if dtype is not None else {})
        )
    except Exception as error:  # truncated or foreign weight files raise many types
        raise QAError(_load_problem(name_or_path, "model weights", error)) from None
    if is_qa_model:
        # A model that claims to be a QA model and lacks weights would answer with a random head.
        broken = sorted(info.get("missing_keys", ())) + sorted(key[0] for key in info.get("mismatched_keys", ()))
        if broken:
            shown = ", ".join(broken[:4]) + (f" and {len(broken) - 4} more" if len(broken) > 4 else "")
            raise QAError(f"{name_or_path}: the weights lack or mis-shape {shown}; the checkpoint is incomplete")
    return model


def on_device(model: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    """``model.to(device)``, typed: transformers' wrapper of ``to`` hides its signature from type checkers."""
    movable: Any = model
    return movable.to(device)


def _check_local_directory(name_or_path: str) -> None:
    """A path that looks local but does not exist is a typo, not a hub id."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise QAError(f"{name_or_path}: not a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise QAError(f"{name_or_path}: permission denied")
        if not (path / "config.json").is_file():
            raise QAError(f"{name_or_path}: not a model directory (no config.json)")
        return
    slashes = name_or_path.count("/")
    looks_local = name_or_path.startswith((".", "/", "~")) or slashes > 1 or (slashes == 1 and path.parent.exists())
    if looks_local:
        raise QAError(f"{name_or_path}: no such model directory")
    hub_unreachable()  # a hub id: fail fast (or use the local cache) when there is no network


def _load_problem(name_or_path: str, what: str, error: Exception) -> str:
    if Path(name_or_path).exists():
        return f"{name_or_path}: cannot load the {what} from this directory ({first_line(error)})"
    return (
        f"{name_or_path}: no such local directory, and loading the {what} from the Hugging Face hub failed "
        f"({first_line(error)}{unreachable_note()}); offline, pass a local model directory"
    )
