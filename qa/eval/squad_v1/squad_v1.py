"""SQuAD v1.1 exact match and F1 as an `evaluate` module that loads offline.

Same inputs and outputs as the hub's ``squad`` metric:
``predictions=[{"id", "prediction_text"}]``,
``references=[{"id", "answers": {"text": [...], "answer_start": [...]}}]``,
returning ``{"exact_match", "f1"}`` in percent. Load it with
``qa.eval.metrics.load_squad_metric()`` or ``evaluate.load("qa/eval/squad_v1")``.
"""

import datasets
import evaluate

from qa.eval.metrics import squad_scores


class SquadV1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="SQuAD v1.1 exact match and F1, as the official v1.1 evaluation script computes them.",
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, EMNLP 2016.",
            inputs_description="predictions: [{id, prediction_text}]; references: [{id, answers}]",
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions: list[dict], references: list[dict]) -> dict[str, float]:
        return squad_scores(
            {prediction["id"]: prediction["prediction_text"] for prediction in predictions},
            {reference["id"]: reference["answers"]["text"] for reference in references},
        )
