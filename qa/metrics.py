"""SQuAD v1.1 exact match and F1, exactly as the official v1.1 evaluation script.

The pure functions here are what the evaluator calls. ``load_squad_metric``
returns the same computation as an `evaluate` module (``qa/squad_v1``), usable
offline where ``evaluate.load("squad")`` would need the hub.
"""

from __future__ import annotations

import re
import string
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
SQUAD_METRIC_DIR = Path(__file__).resolve().parent / "squad_v1"
REPO_ROOT = Path(__file__).resolve().parent.parent


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse white space."""
    text = "".join(character for character in text.lower() if character not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(truth_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """Mean exact match and F1 (x 100) over ``references``, each the max over its gold answers.

    As in the official script, a reference id without a prediction scores 0.
    """
    exact_match = f1 = 0.0
    for example_id, golds in references.items():
        golds = list(golds)
        prediction = predictions.get(example_id)
        if prediction is None:
            continue
        exact_match += max(exact_match_score(prediction, gold) for gold in golds)
        f1 += max(f1_score(prediction, gold) for gold in golds)
    count = max(len(references), 1)
    return {"exact_match": 100.0 * exact_match / count, "f1": 100.0 * f1 / count}


def import_evaluate_library() -> ModuleType:
    """Import the `evaluate` library even where this repository's evaluate.py shadows it.

    Running ``python train.py`` or ``python evaluate.py`` puts the repository
    root first on ``sys.path``, where the entry script ``evaluate.py`` would be
    found instead of the library (and running ``python evaluate.py`` leaves
    the script itself registered as a module). Import with the root left out
    of the path, then restore the path.
    """
    loaded = sys.modules.get("evaluate")
    if loaded is not None and hasattr(loaded, "load"):
        return loaded
    shadow = sys.modules.pop("evaluate", None)
    saved_path = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != REPO_ROOT]
    try:
        import evaluate
    except ImportError:
        evaluate = None
    finally:
        sys.path[:] = saved_path
    if evaluate is None or not hasattr(evaluate, "load"):
        if shadow is not None:
            sys.modules["evaluate"] = shadow
        raise ImportError("the 'evaluate' library is not installed (pip install -r requirements.txt)")
    return evaluate


def load_squad_metric() -> Any:
    """The SQuAD v1.1 metric as an `evaluate.EvaluationModule`, loaded from this package (no network)."""
    evaluate = import_evaluate_library()
    return evaluate.load(str(SQUAD_METRIC_DIR))
