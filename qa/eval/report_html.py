"""report.html: the evaluation report as one self-contained page (inline CSS and SVG, no script, no
network), made from report.json's dictionary. The markup is the Jinja2 template
``templates/report.html.j2`` (autoescaped: every text from the data is HTML-escaped); this module
computes what the template draws: the bars' and lines' coordinates."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

WIDTH, HEIGHT, PAD = 520, 220, 36
BAR_HEIGHT, LABEL_WIDTH = 18, 250
MAX_MARKERS = 60  # circles drawn on a line chart (the line itself has every point)
MAX_RISK_POINTS = 200  # risk-coverage points drawn (the curve is sampled evenly)


@cache
def _templates() -> jinja2.Environment:
    # Imported here: the evaluator (and so predict.py and the server) imports this module, and only a
    # report renders a template.
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("qa.eval", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,  # a name the template uses and the code forgot fails loudly
    )


# The slices of report.json, named in words on the page.
SLICE_TITLES = {
    "question_word": "question word",
    "answer_length": "length of the gold answer",
    "context_length": "length of the context, in windows",
    "answer_window": "window holding the gold answer",
    "has_answer": "answerable or not",
}
RUN_FIELDS = (
    ("model", "model"),
    ("data", "data"),
    ("date", "date"),
    ("precision", "precision"),
    ("windows", "windows"),
)


def report_title(run: dict[str, Any], count: int) -> str:
    if run.get("model") and run.get("data"):
        return f"Evaluation report: {run['model']} on {run['data']} ({count} questions)"
    return f"Evaluation report: {count} questions"


def render_report(report: dict[str, Any], title: str) -> str:
    calibration, risk = report["calibration"], report["risk_coverage"]
    bins = [row for row in calibration["bins"] if row["count"]]
    points = risk["points"]
    step = max(1, len(points) // MAX_RISK_POINTS)
    line_charts = [
        _line_chart(
            "reliability",
            "score",
            "exact match",
            [(row["mean_score"], row["accuracy"]) for row in bins],
            (0.0, 1.0),
            (0.0, 1.0),
            diagonal=True,
        ),
        _line_chart(
            "risk-coverage",
            "coverage",
            "exact match of the answered",
            [(p["coverage"], p["exact_match"] / 100) for p in points[::step] + points[-1:]],
            (0.0, 1.0),
            (0.0, 1.0),
        ),
    ]
    curve = report.get("null_threshold_curve")
    if curve:
        xs = [p["threshold"] for p in curve]
        line_charts.append(
            _line_chart(
                "null-threshold",
                "null threshold",
                "F1",
                [(p["threshold"], p["f1"] / 100) for p in curve],
                (min(xs), max(xs)),
                (0.0, 1.0),
            )
        )
    return (
        _templates()
        .get_template("report.html.j2")
        .render(
            title=title,
            run=[(label, report.get("run", {})[key]) for key, label in RUN_FIELDS if report.get("run", {}).get(key)],
            overall=report["overall"],
            ece=calibration["ece"],
            risk_coverage_area=risk["area"],
            bar_charts=[_bar_chart(name, rows) for name, rows in report["slices"].items()],
            line_charts=line_charts,
            errors=[_error_row(error) for error in report["errors"]],
        )
    )


def _bar_chart(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    scale = (WIDTH - LABEL_WIDTH - 60) / 100
    bars = []
    for index, row in enumerate(rows):
        y = 10 + index * BAR_HEIGHT
        width = max(0.0, row["f1"]) * scale
        bars.append(
            {
                "label": str(row["name"]),
                "count": row["count"],
                "f1": row["f1"],
                "label_x": LABEL_WIDTH - 6,
                "x": LABEL_WIDTH,
                "y": y,
                "text_y": y + 12,
                "width": width,
                "height": BAR_HEIGHT - 4,
                "value_x": LABEL_WIDTH + width + 4,
            }
        )
    return {
        "name": name,
        "title": SLICE_TITLES.get(name, name.replace("_", " ")),
        "width": WIDTH,
        "height": PAD + BAR_HEIGHT * len(rows) + 26,
        "axis_x": LABEL_WIDTH,
        "axis_y": PAD + BAR_HEIGHT * len(rows) + 20,
        "bars": bars,
    }


def _line_chart(
    name: str,
    x_label: str,
    y_label: str,
    points: list[tuple[float, float]],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    diagonal: bool = False,
) -> dict[str, Any]:
    def at(x: float, y: float) -> tuple[float, float]:
        span_x = (x_range[1] - x_range[0]) or 1.0
        span_y = (y_range[1] - y_range[0]) or 1.0
        return (
            PAD + (x - x_range[0]) / span_x * (WIDTH - 2 * PAD),
            HEIGHT - PAD - (y - y_range[0]) / span_y * (HEIGHT - 2 * PAD),
        )

    left, bottom = at(x_range[0], y_range[0])
    right, top = at(x_range[1], y_range[1])
    drawn = [at(px, py) for px, py in points]
    return {
        "name": name,
        "width": WIDTH,
        "height": HEIGHT,
        "x_label": x_label,
        "y_label": y_label,
        "left": left,
        "right": right,
        "top": top,
        "bottom": bottom,
        "middle": (left + right) / 2,
        "label_y": HEIGHT - 8,
        "x_min": x_range[0],
        "x_max": x_range[1],
        "diagonal": diagonal,
        "path": " ".join(f"{x:.1f},{y:.1f}" for x, y in drawn),
        "circles": drawn[:MAX_MARKERS],
    }


def _error_row(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "score": error["score"],
        "question": error["question"],
        "prediction_context": _split(error.get("prediction_context")),
        "gold_context": _split(error.get("gold_context")),
    }


def _split(snippet: dict[str, Any] | None) -> dict[str, str] | None:
    """A context snippet around its marked answer: the text before, the answer, the text after."""
    if not snippet:
        return None
    text, start, end = snippet["text"], snippet["start"], snippet["end"]
    before = ("\u2026 " if snippet.get("cut_before") else "") + text[:start]
    after = text[end:] + (" \u2026" if snippet.get("cut_after") else "")
    return {"before": before, "answer": text[start:end], "after": after}
