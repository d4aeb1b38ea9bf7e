import subprocess
import sys

import pytest
from helpers import REPO_ROOT

from qa.eval.metrics import exact_match_score, f1_score, load_squad_metric, normalize_answer, squad_scores


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The  Cat, sat!", "cat sat"),
        ("an apple a day", "apple day"),
        ("theatre", "theatre"),  # articles only as whole words
        ("  A  ", ""),
        ("Zürich — Ünïcode", "zürich — ünïcode"),  # the official script drops ASCII punctuation only
        ("U.S.A.", "usa"),
    ],
)
def test_normalize_answer(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_and_f1_cases():
    assert exact_match_score("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert f1_score("Eiffel Tower in Paris", "the Eiffel Tower") == pytest.approx(2 * 0.5 * 1 / 1.5)
    # answers that normalise to nothing: F1 0, exact match only against another empty answer
    assert f1_score("the", "a") == 0.0
    assert exact_match_score("the", "a") == 1.0
    assert f1_score("", "Paris") == 0.0
    # repeated tokens count once each
    assert f1_score("paris paris", "paris") == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_squad_scores_take_the_best_gold_and_count_missing_predictions():
    references = {"a": ["Denver Broncos", "Broncos"], "b": ["2016"], "c": ["Paris"]}
    predictions = {"a": "the Broncos", "b": "in 2016 season"}
    scores = squad_scores(predictions, references)
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1.0 + 0.5) / 3)


def test_evaluate_module_computes_squad_v1_offline():
    metric = load_squad_metric()
    predictions = [{"id": "a", "prediction_text": "the Broncos"}, {"id": "b", "prediction_text": "in 2016 season"}]
    references = [
        {"id": "a", "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [0, 7]}},
        {"id": "b", "answers": {"text": ["2016"], "answer_start": [3]}},
    ]
    # a: exact match with "Broncos"; b: precision 1/3, recall 1 -> F1 0.5
    assert metric.compute(predictions=predictions, references=references) == pytest.approx(
        {"exact_match": 50.0, "f1": 75.0}
    )


@pytest.mark.slow
def test_repository_evaluate_py_does_not_shadow_the_library():
    """From the repository root, `import evaluate` finds our entry script; the metric must still load."""
    code = (
        "import evaluate, sys\n"
        "shadowed = not hasattr(evaluate, 'load')\n"
        "from qa.eval.metrics import load_squad_metric\n"
        "m = load_squad_metric()\n"
        "r = m.compute(predictions=[{'id': 'a', 'prediction_text': 'x'}],"
        " references=[{'id': 'a', 'answers': {'text': ['x'], 'answer_start': [0]}}])\n"
        "print(shadowed, r['exact_match'], hasattr(sys.modules['evaluate'], 'load'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    shadowed, exact_match, library_registered = result.stdout.split()
    assert shadowed == "True"  # the trap is real in this layout...
    assert float(exact_match) == 100.0  # ...and the library was loaded anyway,
    assert library_registered == "True"  # and stays the `evaluate` that later imports get
