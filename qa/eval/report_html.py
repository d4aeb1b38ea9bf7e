"""report.html: the evaluation report as one self-contained page (inline CSS and SVG, no script, no
network), made from report.json's dictionary. Every text from the data is HTML-escaped."""

from __future__ import annotations

from html import escape
from typing import Any

WIDTH, HEIGHT, PAD = 520, 220, 36

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 62rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
h1 { margin-bottom: .2rem; } .headline { font-size: 1.3rem; margin: .3rem 0 1rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; } figure { margin: 0; } figcaption { font-weight: 600; }
svg text { font-size: 11px; fill: #333; } .bar { fill: #4c78a8; }
.line { fill: none; stroke: #e45756; stroke-width: 2; }
.diag { stroke: #999; stroke-dasharray: 4 3; } .axis { stroke: #555; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
td, th { border-top: 1px solid #ddd; padding: .3rem; }
th { text-align: left; } mark.prediction { background: #ffb3b3; } mark.gold { background: #b3e6b3; }
"""


def render_report(report: dict[str, Any], title: str) -> str:
    overall = report["overall"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p class='headline' id='headline'>{overall['count']} questions: exact match "
        f"{overall['exact_match']:.2f}, F1 {overall['f1']:.2f}; calibration error (ECE) "
        f"{report['calibration']['ece']:.3f}; risk-coverage area {report['risk_coverage']['area']:.3f}</p>",
        "<h2>F1 by slice</h2><div class='charts'>",
    ]
    for name, rows in report["slices"].items():
        parts.append(_bar_chart(name, rows))
    parts.append("</div><h2>Scores</h2><div class='charts'>")
    bins = [row for row in report["calibration"]["bins"] if row["count"]]
    parts.append(
        _line_chart(
            "reliability",
            "score",
            "exact match",
            [(row["mean_score"], row["accuracy"]) for row in bins],
            (0.0, 1.0),
            (0.0, 1.0),
            diagonal=True,
        )
    )
    points = report["risk_coverage"]["points"]
    step = max(1, len(points) // 200)
    parts.append(
        _line_chart(
            "risk-coverage",
            "coverage",
            "exact match of the answered",
            [(p["coverage"], p["exact_match"] / 100) for p in points[::step] + points[-1:]],
            (0.0, 1.0),
            (0.0, 1.0),
        )
    )
    curve = report.get("null_threshold_curve")
    if curve:
        xs = [p["threshold"] for p in curve]
        parts.append(
            _line_chart(
                "null-threshold",
                "null threshold",
                "F1",
                [(p["threshold"], p["f1"] / 100) for p in curve],
                (min(xs), max(xs)),
                (0.0, 1.0),
            )
        )
    parts.append("</div><h2>The wrong answers the model was most sure of</h2>")
    parts.append(_error_table(report["errors"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _bar_chart(name: str, rows: list[dict[str, Any]]) -> str:
    bar_height, label_width = 18, 250
    height = PAD + bar_height * len(rows) + 10
    scale = (WIDTH - label_width - 60) / 100
    bars = []
    for index, row in enumerate(rows):
        y = 10 + index * bar_height
        width = max(0.0, row["f1"]) * scale
        bars.append(
            f"<text x='{label_width - 6}' y='{y + 12}' text-anchor='end'>{escape(str(row['name']))} "
            f"({row['count']})</text><rect class='bar' x='{label_width}' y='{y}' width='{width:.1f}' "
            f"height='{bar_height - 4}'/><text x='{label_width + width + 4:.1f}' y='{y + 12}'>{row['f1']:.1f}</text>"
        )
    return (
        f"<figure class='slice'><figcaption>{escape(name)}</figcaption>"
        f"<svg class='chart' id='slice-{escape(name)}' width='{WIDTH}' height='{height}' role='img'>"
        + "".join(bars)
        + "</svg></figure>"
    )


def _line_chart(
    name: str,
    x_label: str,
    y_label: str,
    points: list[tuple[float, float]],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    diagonal: bool = False,
) -> str:
    def at(x: float, y: float) -> tuple[float, float]:
        span_x = (x_range[1] - x_range[0]) or 1.0
        span_y = (y_range[1] - y_range[0]) or 1.0
        return (
            PAD + (x - x_range[0]) / span_x * (WIDTH - 2 * PAD),
            HEIGHT - PAD - (y - y_range[0]) / span_y * (HEIGHT - 2 * PAD),
        )

    left, bottom = at(x_range[0], y_range[0])
    right, top = at(x_range[1], y_range[1])
    shapes = [
        f"<line class='axis' x1='{left}' y1='{bottom}' x2='{right}' y2='{bottom}'/>",
        f"<line class='axis' x1='{left}' y1='{bottom}' x2='{left}' y2='{top}'/>",
        f"<text x='{(left + right) / 2}' y='{HEIGHT - 8}' text-anchor='middle'>{escape(x_label)}</text>",
        f"<text x='10' y='{top - 8}'>{escape(y_label)}</text>",
        f"<text x='{left}' y='{bottom + 14}'>{x_range[0]:g}</text>",
        f"<text x='{right}' y='{bottom + 14}' text-anchor='end'>{x_range[1]:g}</text>",
    ]
    if diagonal:
        shapes.append(f"<line class='diag' x1='{left}' y1='{bottom}' x2='{right}' y2='{top}'/>")
    if points:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (at(px, py) for px, py in points))
        shapes.append(f"<polyline class='line' points='{path}'/>")
        shapes += [f"<circle cx='{x:.1f}' cy='{y:.1f}' r='2.5' fill='#e45756'/>" for x, y in (at(*p) for p in points)][
            :60
        ]
    return (
        f"<figure><figcaption>{escape(name)}</figcaption><svg class='chart' id='{escape(name)}' width='{WIDTH}' "
        f"height='{HEIGHT}' role='img'>" + "".join(shapes) + "</svg></figure>"
    )


def _marked(snippet: dict[str, Any] | None, kind: str) -> str:
    if not snippet:
        return "<em>(no answer)</em>"
    text, start, end = snippet["text"], snippet["start"], snippet["end"]
    return f"{escape(text[:start])}<mark class='{kind}'>{escape(text[start:end])}</mark>{escape(text[end:])}"


def _error_table(errors: list[dict[str, Any]]) -> str:
    rows = [
        "<table id='errors'><tr><th>score</th><th>question</th><th>prediction in its context</th>"
        "<th>gold answer in its context</th></tr>"
    ]
    for error in errors:
        rows.append(
            f"<tr class='error-row'><td>{error['score']:.3f}</td><td>{escape(error['question'])}</td>"
            f"<td>{_marked(error.get('prediction_context'), 'prediction')}</td>"
            f"<td>{_marked(error.get('gold_context'), 'gold')}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)
