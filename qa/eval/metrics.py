"""SQuAD v1.1 and v2.0 exact match and F1, exactly as the official evaluation scripts compute them.

The pure functions here are what the evaluator calls. ``load_squad_metric``
returns the same computation as an `evaluate` module (``qa/eval/squad_v1``), usable
offline where ``evaluate.load("squad")`` would need the hub.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import string
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
SQUAD_METRIC_DIR = Path(__file__).resolve().parent / "squad_v1"
REPO_ROOT = Path(__file__).resolve().parents[2]  # holds the entry script evaluate.py


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

    Running ``python train.py`` or ``python evaluate.py`` puts the repository root first on
    ``sys.path``, where the entry script ``evaluate.py`` would be found instead of the library (and
    running ``python evaluate.py`` leaves the script itself registered as a module). The library is
    looked up on the path without the root, and ``sys.path`` itself is left as it is.
    """
    loaded = sys.modules.get("evaluate")
    if loaded is not None and hasattr(loaded, "load"):
        return loaded
    elsewhere = [entry for entry in sys.path if Path(entry or ".").resolve() != REPO_ROOT]
    spec = importlib.machinery.PathFinder.find_spec("evaluate", elsewhere)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError("the 'evaluate' library is not installed (pip install -r requirements.txt)")
    shadow = sys.modules.pop("evaluate", None)
    module = importlib.util.module_from_spec(spec)
    sys.modules["evaluate"] = module  # the library's own submodules import it by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if shadow is not None:
            sys.modules["evaluate"] = shadow
        else:
            sys.modules.pop("evaluate", None)
        raise
    return module


def load_squad_metric() -> Any:
    """The SQuAD v1.1 metric as an `evaluate.EvaluationModule`, loaded from this package (no network)."""
    evaluate = import_evaluate_library()
    return evaluate.load(str(SQUAD_METRIC_DIR))


# ---------------------------------------------------------------- SQuAD v2.0
# A port of the official evaluate-v2.0.py: same normalisation, same handling of empty answers,
# same threshold sweep, so that its output on our predictions.json / na_prob.json equals ours.


def _v2_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def _v2_exact(gold: str, prediction: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def _v2_f1(gold: str, prediction: str) -> float:
    gold_tokens, prediction_tokens = _v2_tokens(gold), _v2_tokens(prediction)
    if not gold_tokens or not prediction_tokens:
        return float(gold_tokens == prediction_tokens)  # both empty: right abstention
    common = Counter(gold_tokens) & Counter(prediction_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(prediction_tokens), overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def v2_raw_scores(predictions: Mapping[str, str], references: Mapping[str, Iterable[str]]) -> tuple[dict, dict]:
    """Exact match and F1 (0-1) per question; a question without gold answers expects ''."""
    exact, f1 = {}, {}
    for example_id, golds in references.items():
        golds = [gold for gold in golds if normalize_answer(gold)] or [""]
        if example_id not in predictions:
            continue
        prediction = predictions[example_id]
        exact[example_id] = max(_v2_exact(gold, prediction) for gold in golds)
        f1[example_id] = max(_v2_f1(gold, prediction) for gold in golds)
    return exact, f1


def _best_thresh(
    predictions: Mapping[str, str], scores: dict, na_probs: Mapping[str, float], has_answer: dict
) -> tuple[float, float]:
    current = best = sum(1 for example_id in has_answer if not has_answer[example_id])
    best_thresh = 0.0
    for example_id in sorted(na_probs, key=lambda key: na_probs[key]):
        if example_id not in scores:
            continue
        if has_answer[example_id]:
            change = scores[example_id]
        else:
            change = -1 if predictions[example_id] else 0
        current += change
        if current > best:
            best, best_thresh = current, na_probs[example_id]
    return 100.0 * best / len(scores), best_thresh


def squad_v2_scores(
    predictions: Mapping[str, str], references: Mapping[str, Iterable[str]], na_probs: Mapping[str, float]
) -> dict[str, float]:
    """The official v2.0 metrics (``exact``, ``f1``, ``HasAns_*``, ``NoAns_*``, ``best_*``), in percent."""
    references = {example_id: list(golds) for example_id, golds in references.items()}
    has_answer = {example_id: bool(golds) for example_id, golds in references.items()}
    exact, f1 = v2_raw_scores(predictions, references)
    # The official script applies na_prob_thresh=1.0 here, which changes nothing for probabilities <= 1.

    def summary(ids: list[str], prefix: str = "") -> dict[str, float]:
        return {
            f"{prefix}exact": 100.0 * sum(exact[i] for i in ids) / len(ids),
            f"{prefix}f1": 100.0 * sum(f1[i] for i in ids) / len(ids),
            f"{prefix}total": len(ids),
        }

    result = summary(list(references))
    has_ids = [example_id for example_id, has in has_answer.items() if has]
    no_ids = [example_id for example_id, has in has_answer.items() if not has]
    if has_ids:
        result.update(summary(has_ids, "HasAns_"))
    if no_ids:
        result.update(summary(no_ids, "NoAns_"))
    result["best_exact"], result["best_exact_thresh"] = _best_thresh(predictions, exact, na_probs, has_answer)
    result["best_f1"], result["best_f1_thresh"] = _best_thresh(predictions, f1, na_probs, has_answer)
    return result


def best_null_threshold(
    null_minus_best: ArrayLike, f1_answered: ArrayLike, has_answer: ArrayLike
) -> tuple[float, float]:
    """The threshold on null score − best span score that maximises F1 (answer iff the difference <= it).

    The official sweep, made exact for ties: questions are answered in order of
    their difference, and a threshold can only fall between different values.
    Returns ``(threshold, best F1 in percent)``; with nothing worth answering the
    threshold lies below every difference.
    """
    import numpy as np

    differences = np.asarray(null_minus_best, dtype=np.float64)
    answered = np.asarray(f1_answered, dtype=np.float64)
    has = np.asarray(has_answer, dtype=bool)
    abstained = (~has).astype(np.float64)  # abstaining is right exactly when there is no answer
    order = np.argsort(differences, kind="stable")
    sorted_differences = differences[order]
    gains = np.cumsum((answered - abstained)[order])
    # Only the last question of a run of equal differences is a place to cut.
    cut = np.flatnonzero(
        np.append(sorted_differences[1:] != sorted_differences[:-1], True) & np.isfinite(sorted_differences)
    )
    start = abstained.sum()
    if len(cut) == 0 or gains[cut].max() <= 0:
        threshold = float(sorted_differences[0] - 1.0) if np.isfinite(sorted_differences[0]) else 0.0
        return threshold, 100.0 * start / max(len(differences), 1)
    best = cut[np.argmax(gains[cut])]
    return float(sorted_differences[best]), 100.0 * (start + gains[best]) / len(differences)
