"""The report's figures. Bare matplotlib Figures with an Agg canvas (no pyplot state, no backend switch), each
written atomically as a PNG."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.io import atomic_path


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as temporary:
        fig.savefig(temporary, bbox_inches="tight")
    return path


def _label_fontsize(num_labels: int) -> float:
    return 9 if num_labels <= 12 else 7 if num_labels <= 40 else 5


def per_label_f1(path: Path, per_label: list[dict], macro_f1: float | None = None) -> Path:
    """Horizontal F1 bars, largest support at the top, with the macro-F1 as a line."""
    rows = sorted(per_label, key=lambda r: r["support"])
    num = len(rows)
    fig = _figure(7, max(2.5, 0.26 * num + 1.2))
    ax = fig.add_subplot()
    y = np.arange(num)
    ax.barh(y, [r["f1"] for r in rows], color="tab:blue")
    ax.set_yticks(y, [f"{r['label']} (n={r['support']})" for r in rows], fontsize=_label_fontsize(num))
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    if macro_f1 is not None:
        ax.axvline(macro_f1, color="tab:red", linestyle="--", linewidth=1, label="macro-F1")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Per-label F1 (sorted by support)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def pr_curves(path: Path, scores: np.ndarray, targets: np.ndarray, per_label: list[dict]) -> Path:
    """One precision-recall panel per label, with chance level and the operating point."""
    from sklearn.metrics import precision_recall_curve

    num = scores.shape[1]
    cols = int(math.ceil(math.sqrt(num)))
    rows = int(math.ceil(num / cols))
    panel = 2.0 if num > 4 else 3.2
    fig = _figure(panel * cols, panel * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    fontsize = 7 if num > 4 else 9
    for c in range(rows * cols):
        ax = axes[c // cols][c % cols]
        if c >= num:
            ax.axis("off")
            continue
        entry = per_label[c]
        positives = int(targets[:, c].sum())
        if positives == 0:
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", fontsize=fontsize, transform=ax.transAxes)
        else:
            precision, recall, _ = precision_recall_curve(targets[:, c], scores[:, c])
            ax.plot(recall, precision, linewidth=1)
            ax.axhline(positives / len(targets), color="grey", linestyle=":", linewidth=0.8)  # chance level
            ax.plot([entry["recall"]], [entry["precision"]], "o", color="tab:red", markersize=3)  # operating point
        ap = entry.get("average_precision")
        ax.set_title(entry["label"] if ap is None else f"{entry['label']} AP={ap:.2f}", fontsize=fontsize)
        ax.tick_params(labelsize=fontsize - 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    fig.supxlabel("recall", fontsize=9)
    fig.supylabel("precision", fontsize=9)
    fig.suptitle("Precision-recall curves (dot: operating point)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def threshold_curves(path: Path, names: Sequence[str], scores: np.ndarray, targets: np.ndarray,
                     marks: dict[str, list[float] | None]) -> Path:
    """One panel per label: precision, recall and F1 against the decision threshold (``score > t``), with a vertical
    line for each operating point in ``marks`` (name -> per-label thresholds; None: nothing to mark)."""
    from src.metrics.thresholds import Cuts

    num = scores.shape[1]
    cols = int(math.ceil(math.sqrt(num)))
    rows = int(math.ceil(num / cols))
    panel = 2.0 if num > 4 else 3.2
    fig = _figure(panel * cols, panel * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    fontsize = 7 if num > 4 else 9
    styles = ("--", ":", "-.")
    for c in range(rows * cols):
        ax = axes[c // cols][c % cols]
        if c >= num:
            ax.axis("off")
            continue
        cuts = Cuts.of(np.asarray(scores[:, c], dtype=np.float64), np.asarray(targets[:, c], dtype=np.float64))
        precision, recall = cuts.precision, cuts.recall
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(precision)),
                       where=precision + recall > 0)
        x = np.concatenate([[0.0], cuts.thresholds[::-1], [1.0]])  # ascending; a value holds up to the next cut
        for values, colour, label in ((precision, "tab:blue", "precision"), (recall, "tab:orange", "recall"),
                                      (f1, "tab:green", "F1")):
            y = values[::-1]
            ax.step(x, np.concatenate([y[:1], y, y[-1:]]), where="post", color=colour, linewidth=1, label=label)
        for (name, cut), style in zip(marks.items(), styles):
            if cut is not None:
                ax.axvline(cut[c], color="black", linestyle=style, linewidth=0.8, label=name)
        ax.set_title(f"{names[c]} (n={cuts.positives})", fontsize=fontsize)
        ax.tick_params(labelsize=fontsize - 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    axes[0][0].legend(fontsize=fontsize - 1, loc="lower left")
    fig.supxlabel("threshold (a label is predicted when its score is above it)", fontsize=9)
    fig.suptitle("Precision, recall and F1 against the threshold", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def reliability_diagram(path: Path, names: Sequence[str], scores: np.ndarray, targets: np.ndarray) -> Path:
    """One panel per label: the positive rate of each score bin against its mean score (bars of the bin width, the
    diagonal is perfect calibration), the label's ECE in the title; bins' row counts shaded underneath."""
    from src.metrics.calibration import BINS, reliability

    bins = reliability(scores, targets)
    num = scores.shape[1]
    cols = int(math.ceil(math.sqrt(num)))
    rows = int(math.ceil(num / cols))
    panel = 2.0 if num > 4 else 3.2
    fig = _figure(panel * cols, panel * rows)
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    fontsize = 7 if num > 4 else 9
    left = np.arange(BINS) / BINS
    for c in range(rows * cols):
        ax = axes[c // cols][c % cols]
        if c >= num:
            ax.axis("off")
            continue
        share = bins.rows[c] / max(bins.rows[c].sum(), 1)
        ax.bar(left, share, width=1 / BINS, align="edge", color="lightgrey", label="rows")
        ax.bar(left, np.nan_to_num(bins.positive_rate[c]), width=1 / BINS, align="edge", fill=False,
               edgecolor="tab:blue", linewidth=1, label="positive rate")
        ax.plot([0, 1], [0, 1], color="tab:red", linestyle=":", linewidth=0.8)
        ax.set_title(f"{names[c]} ECE={bins.ece[c]:.3f}", fontsize=fontsize)
        ax.tick_params(labelsize=fontsize - 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    axes[0][0].legend(fontsize=fontsize - 1, loc="upper left")
    fig.supxlabel("score", fontsize=9)
    fig.supylabel("share of rows with the label", fontsize=9)
    fig.suptitle("Reliability (diagonal: calibrated; grey: share of rows per bin)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _heatmap(ax, matrix: np.ndarray, names: Sequence[str], cmap: str, annotate: bool, fmt: str):
    image = ax.imshow(matrix, cmap=cmap, aspect="auto")
    num = len(names)
    fontsize = _label_fontsize(num)
    ax.set_xticks(np.arange(num), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(np.arange(num), names, fontsize=fontsize)
    if annotate:
        finite = np.nan_to_num(matrix, nan=0.0)
        cut = finite.max() / 2 if finite.size else 0
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                if not np.isnan(matrix[i, j]):
                    color = "white" if matrix[i, j] > cut else "black"
                    ax.text(j, i, format(matrix[i, j], fmt), ha="center", va="center", fontsize=5, color=color)
    return image


def cooccurrence(path: Path, targets: np.ndarray, label_names: Sequence[str]) -> Path:
    """P(column label | row label) in the targets, diagonal blank."""
    counts = targets.T.astype(np.float64) @ targets.astype(np.float64)
    support = np.diag(counts).copy()
    conditional = np.divide(counts, support[:, None], out=np.full_like(counts, np.nan), where=support[:, None] > 0)
    np.fill_diagonal(conditional, np.nan)
    num = len(label_names)
    size = max(4.0, 0.3 * num + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = _heatmap(ax, conditional, label_names, "viridis", annotate=num <= 12, fmt=".2f")
    fig.colorbar(image, ax=ax, label="P(column | row)")
    ax.set_xlabel("co-occurring label")
    ax.set_ylabel("label")
    ax.set_title("Label co-occurrence in the targets")
    return _save(fig, path)


def errors(path: Path, per_label: list[dict], num_rows: int) -> Path:
    """Per-label false-positive and false-negative rates at the decision rule."""
    num = len(per_label)
    fp_rate = [r["fp"] / (num_rows - r["support"]) if num_rows > r["support"] else 0.0 for r in per_label]
    fn_rate = [r["fn"] / r["support"] if r["support"] else 0.0 for r in per_label]
    fig = _figure(7, max(2.5, 0.3 * num + 1.2))
    ax = fig.add_subplot()
    y = np.arange(num)
    height = 0.4
    ax.barh(y - height / 2, fp_rate, height, label="FP rate (FP / negatives)", color="tab:orange")
    ax.barh(y + height / 2, fn_rate, height, label="FN rate (FN / positives)", color="tab:purple")
    ax.set_yticks(y, [f"{r['label']} (n={r['support']})" for r in per_label], fontsize=_label_fontsize(num))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("rate")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("Per-label error rates at the decision rule")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def confusion_matrix(path: Path, matrix: list[list[int]], label_names: Sequence[str]) -> Path:
    """Rows: true label, columns: decided label; counts in the cells, colour normalised by the row's total."""
    counts = np.asarray(matrix, dtype=np.float64)
    totals = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    num = len(label_names)
    size = max(4.0, 0.35 * num + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = _heatmap(ax, normalised, label_names, "Blues", annotate=False, fmt="")
    if num <= 30:
        for i in range(num):
            for j in range(num):
                color = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=ax, label="fraction of the row's decisions")
    ax.set_xlabel("decided label")
    ax.set_ylabel("true label")
    ax.set_title("Confusion matrix (counts; colour row-normalised)")
    return _save(fig, path)


def training_curves(path: Path, history: dict[str, Sequence[tuple[float, float]]],
                    marks: dict[str, float] | None = None) -> Path:
    """One panel per metric (``{name: [(step, value), ...]}``); ``marks`` draws labelled vertical lines (e.g. the
    step of the best checkpoint)."""
    names = list(history)
    cols = min(3, len(names))
    rows = int(math.ceil(len(names) / cols))
    fig = _figure(4 * cols, 3 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= len(names):
            ax.axis("off")
            continue
        points = sorted(history[names[i]])
        if points:
            steps, values = zip(*points)
            ax.plot(steps, values, marker="." if len(points) < 50 else None, linewidth=1)
        for label, step in (marks or {}).items():
            ax.axvline(step, color="tab:red", linestyle="--", linewidth=0.8, label=label)
        if marks and i == 0:
            ax.legend(fontsize=7)
        ax.set_title(names[i], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Training curves", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
