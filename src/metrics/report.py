"""A split's report on disk: the per-label table (CSV and markdown) and the figures, from
:func:`src.metrics.classification.full_metrics`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from src.io import write_text
from src.labels import LabelSpace
from src.metrics import plots
from src.metrics.thresholds import Thresholds


def write_report(directory: str | Path, space: LabelSpace, metrics: dict, scores, targets,
                 thresholds: Thresholds | None = None) -> list[Path]:
    """``per_label.csv``, ``per_label.md`` (sorted by support), ``per_label_f1.png``, ``pr_curves.png``,
    ``confusion_matrix.png``, ``errors.png``, ``reliability.png``; when some row has several true labels,
    ``cooccurrence.png``; for a multi-label space, ``thresholds.png`` (the threshold-metric curves, ``thresholds``'
    operating point marked)."""
    directory = Path(directory)
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    per_label = metrics["per_label"]
    written = [
        write_text(directory / "per_label.csv", csv_table(per_label)),
        write_text(directory / "per_label.md", markdown_table(per_label)),
        plots.per_label_f1(directory / "per_label_f1.png", per_label, metrics.get("macro_f1")),
        plots.pr_curves(directory / "pr_curves.png", scores, targets, per_label),
        plots.confusion_matrix(directory / "confusion_matrix.png", metrics["confusion_matrix"], space.names),
        plots.errors(directory / "errors.png", per_label, len(targets)),
        plots.reliability_diagram(directory / "reliability.png", space.names, scores, targets),
    ]
    if targets.sum(1).max(initial=0) > 1:
        written.append(plots.cooccurrence(directory / "cooccurrence.png", targets, space.names))
    if space.thresholded:
        mark = {thresholds.policy: thresholds.per_label} if thresholds and thresholds.top_k is None else {}
        written.append(plots.threshold_curves(directory / "thresholds.png", space.names, scores, targets,
                                              mark or {"0.5": [0.5] * space.num_labels}))
    return written


def csv_table(per_label: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(per_label[0]) if per_label else ["label"], lineterminator="\n")
    writer.writeheader()
    for row in per_label:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return out.getvalue()


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def markdown_table(per_label: list[dict]) -> str:
    columns = list(per_label[0]) if per_label else ["label"]
    rows = sorted(per_label, key=lambda r: -r["support"])  # stable: ties keep label order
    rule = "|" + "|".join("---" if c == "label" else "---:" for c in columns) + "|"
    lines = ["| " + " | ".join(columns) + " |", rule]
    lines += ["| " + " | ".join(_format(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
