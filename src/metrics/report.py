"""The full evaluation report: every headline metric, per-label tables, bootstrap intervals and plots.

:func:`full_metrics` computes with torchmetrics (the same implementation the training loop logs), on predictions from
:func:`src.metrics.thresholds.decide`, so ``thresholds=None`` gives the metrics "at 0.5" (strict ``score > 0.5``) and a
:class:`~src.metrics.thresholds.Thresholds` gives the calibrated ones. :func:`bootstrap_ci` puts a 95% interval on a
headline metric, and :func:`write_report` writes the tables and figures into a directory.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multilabel_auroc,
    multilabel_average_precision,
    multilabel_exact_match,
    multilabel_f1_score,
    multilabel_hamming_distance,
    multilabel_precision,
    multilabel_recall,
)

from src.metrics.f1 import f1_from_counts, macro_f1_from_counts, one_hot_targets
from src.metrics.resampling import resample_weights
from src.metrics.thresholds import Thresholds, decide

TASKS = ("multilabel", "multiclass")

#: Metrics :func:`bootstrap_ci` can resample, per task.
BOOTSTRAP_METRICS = {
    "multilabel": ("macro_f1", "micro_f1", "weighted_f1", "samples_f1", "exact_match", "hamming_loss"),
    "multiclass": ("macro_f1", "micro_f1", "weighted_f1", "accuracy"),
}


# ---------------------------------------------------------------- inputs


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _inputs(scores, targets, task: str, thresholds: Thresholds | None):
    _check_task(task)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, C], got shape {scores.shape}")
    onehot = one_hot_targets(targets, scores.shape[1], task)
    if len(onehot) != len(scores):
        raise ValueError(f"{len(scores)} score rows but {len(onehot)} target rows")
    return scores, onehot, decide(scores, thresholds, task)


# ---------------------------------------------------------------- full_metrics


def full_metrics(
    scores: np.ndarray,
    targets: np.ndarray,
    task: str,
    label_names: Sequence[str],
    thresholds: Thresholds | None = None,
) -> dict:
    """All evaluation metrics for probabilities ``scores`` [N, C] against ``targets``.

    ``targets``: multilabel 0/1 [N, C]; multiclass class indices [N] (or one-hot [N, C]). Predictions are
    ``decide(scores, thresholds, task)``: strict ``> 0.5`` per label when ``thresholds`` is None (multilabel), the
    arg-max for multiclass. All counting metrics use scikit-learn's ``zero_division=0`` convention.

    Returns a flat dict of floats plus ``per_label`` (a list of dicts: label, support, precision, recall, f1, tp, fp,
    fn, and for multilabel the threshold used, average_precision and auroc) and, for multiclass,
    ``confusion_matrix`` (rows = true class, columns = predicted, as in scikit-learn).

    multilabel headline keys: ``macro_f1``, ``micro_f1``, ``weighted_f1``, ``samples_f1``, ``mean_average_precision``
    (macro), ``macro_auroc``, ``exact_match`` (subset accuracy), ``hamming_loss``; plus ``n_samples``, ``n_labels``
    and ``n_labels_without_positives``. Ranking metrics are undefined for a label without positives (AP and AUROC)
    or without negatives (AUROC): such labels get ``None`` per label and are left out of ``mean_average_precision``
    and ``macro_auroc``, which equal scikit-learn's macro averages over the remaining labels (NaN if none remain).
    F1 macro-averages over all labels, so a label without positives counts as F1 = 0 there (as in torchmetrics and
    scikit-learn).

    multiclass headline keys: ``accuracy``, ``macro_f1``, ``micro_f1``, ``weighted_f1``, ``n_samples``, ``n_labels``.
    Macro-F1 averages over the classes that occur in the targets or the predictions (torchmetrics' rule, equal to
    scikit-learn's default label set).
    """
    scores, onehot, predictions = _inputs(scores, targets, task, thresholds)
    num_labels = scores.shape[1]
    if len(label_names) != num_labels:
        raise ValueError(f"{len(label_names)} label names for {num_labels} labels")

    tp = (onehot & predictions).sum(0)
    fp = (~onehot & predictions).sum(0)
    fn = (onehot & ~predictions).sum(0)
    support = onehot.sum(0)

    if task == "multilabel":
        out = _multilabel_metrics(scores, onehot, predictions)
    else:
        out = _multiclass_metrics(onehot, predictions)
    out["n_samples"] = int(len(scores))
    out["n_labels"] = int(num_labels)

    per_label = []
    for c, name in enumerate(label_names):
        row = {
            "label": str(name),
            "support": int(support[c]),
            "precision": float(out["_precision"][c]),
            "recall": float(out["_recall"][c]),
            "f1": float(out["_f1"][c]),
            "tp": int(tp[c]),
            "fp": int(fp[c]),
            "fn": int(fn[c]),
        }
        if task == "multilabel":
            row["threshold"] = 0.5 if thresholds is None else float(thresholds.per_label[c])
            row["average_precision"] = out["_ap"][c]
            row["auroc"] = out["_auroc"][c]
        per_label.append(row)
    for key in [k for k in out if k.startswith("_")]:
        del out[key]
    out["per_label"] = per_label
    return out


def _multilabel_metrics(scores, onehot, predictions) -> dict:
    num_labels = scores.shape[1]
    preds = torch.from_numpy(predictions.astype(np.int64))
    target = torch.from_numpy(onehot.astype(np.int64))
    kw = {"num_labels": num_labels, "validate_args": False}

    def f1(average):
        return multilabel_f1_score(preds, target, average=average, zero_division=0, **kw)

    out = {
        "macro_f1": f1("macro").item(),
        "micro_f1": f1("micro").item(),
        "weighted_f1": f1("weighted").item(),
        # samples-F1: each row is a "label" of the transposed problem, and macro averages over them
        "samples_f1": multilabel_f1_score(
            preds.T, target.T, num_labels=len(scores), average="macro", zero_division=0, validate_args=False
        ).item()
        if len(scores)
        else 0.0,
        "exact_match": multilabel_exact_match(preds, target, **kw).item(),
        "hamming_loss": multilabel_hamming_distance(preds, target, average="micro", **kw).item(),
        "_precision": multilabel_precision(preds, target, average="none", zero_division=0, **kw).numpy(),
        "_recall": multilabel_recall(preds, target, average="none", zero_division=0, **kw).numpy(),
        "_f1": f1("none").numpy(),
    }

    # ranking metrics only where defined: AP needs a positive, AUROC a positive and a negative
    positives = onehot.sum(0)
    has_pos = np.flatnonzero(positives > 0)
    has_both = np.flatnonzero((positives > 0) & (positives < len(onehot)))
    ap: list[float | None] = [None] * num_labels
    auroc: list[float | None] = [None] * num_labels
    probs = torch.from_numpy(scores)
    if has_pos.size:
        values = multilabel_average_precision(
            probs[:, has_pos], target[:, has_pos], num_labels=len(has_pos), average="none", validate_args=False
        )
        for c, v in zip(has_pos, values.reshape(-1).tolist()):
            ap[c] = float(v)
    if has_both.size:
        values = multilabel_auroc(
            probs[:, has_both], target[:, has_both], num_labels=len(has_both), average="none", validate_args=False
        )
        for c, v in zip(has_both, values.reshape(-1).tolist()):
            auroc[c] = float(v)
    defined_ap = [v for v in ap if v is not None]
    defined_auroc = [v for v in auroc if v is not None]
    out["mean_average_precision"] = float(np.mean(defined_ap)) if defined_ap else math.nan
    out["macro_auroc"] = float(np.mean(defined_auroc)) if defined_auroc else math.nan
    out["n_labels_without_positives"] = int((positives == 0).sum())
    out["_ap"], out["_auroc"] = ap, auroc
    return {k: (float(v) if isinstance(v, float) else v) for k, v in out.items()}


def _multiclass_metrics(onehot, predictions) -> dict:
    num_classes = onehot.shape[1]
    preds = torch.from_numpy(predictions.argmax(1))
    target = torch.from_numpy(onehot.argmax(1))
    kw = {"num_classes": num_classes, "validate_args": False}
    return {
        "accuracy": multiclass_accuracy(preds, target, average="micro", **kw).item(),
        "macro_f1": multiclass_f1_score(preds, target, average="macro", zero_division=0, **kw).item(),
        "micro_f1": multiclass_f1_score(preds, target, average="micro", zero_division=0, **kw).item(),
        "weighted_f1": multiclass_f1_score(preds, target, average="weighted", zero_division=0, **kw).item(),
        "confusion_matrix": multiclass_confusion_matrix(preds, target, **kw).tolist(),
        "_precision": multiclass_precision(preds, target, average="none", zero_division=0, **kw).numpy(),
        "_recall": multiclass_recall(preds, target, average="none", zero_division=0, **kw).numpy(),
        "_f1": multiclass_f1_score(preds, target, average="none", zero_division=0, **kw).numpy(),
    }


# ---------------------------------------------------------------- bootstrap


def bootstrap_ci(
    scores: np.ndarray,
    targets: np.ndarray,
    task: str,
    metric: str = "macro_f1",
    thresholds: Thresholds | None = None,
    n: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile bootstrap interval (2.5th and 97.5th percentiles, linear interpolation) of a headline metric.

    Rows are resampled with replacement ``n`` times with fixed predictions (``decide(scores, thresholds, task)``;
    thresholds are not re-tuned per resample). Resample ``b`` uses the rows of the ``b``-th
    ``rng.integers(0, N, size=N)`` call on ``rng = np.random.default_rng(seed)``. Vectorised: per-row TP/FP/FN per
    label are computed once, and each resample's totals are a weighted sum with its draw counts, so 1000 resamples of
    5k rows x 28 labels take well under a second. Metrics: :data:`BOOTSTRAP_METRICS` (same conventions as
    :func:`full_metrics`: multilabel macro-F1 over all labels, multiclass over classes present in the resample's
    targets or predictions).
    """
    scores, onehot, predictions = _inputs(scores, targets, task, thresholds)
    if metric not in BOOTSTRAP_METRICS[task]:
        raise ValueError(f"bootstrap metric for {task} must be one of {BOOTSTRAP_METRICS[task]}, got {metric!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    num_rows, num_labels = onehot.shape
    if num_rows == 0:
        raise ValueError("cannot bootstrap zero rows")

    counting = metric in ("macro_f1", "micro_f1", "weighted_f1")
    if counting:
        per_row = [
            (onehot & predictions).astype(np.float32),
            (~onehot & predictions).astype(np.float32),
            (onehot & ~predictions).astype(np.float32),
        ]
    else:
        fp = (~onehot & predictions).sum(1)
        fn = (onehot & ~predictions).sum(1)
        wrong = fp + fn
        if metric == "samples_f1":
            row_value = f1_from_counts((onehot & predictions).sum(1), fp, fn)
        elif metric in ("exact_match", "accuracy"):
            row_value = (wrong == 0).astype(np.float64)
        else:  # hamming_loss
            row_value = wrong / num_labels

    values = []
    for weights in resample_weights(num_rows, n, seed):
        if not counting:
            values.append(weights.astype(np.float64) @ row_value / num_rows)
            continue
        tp, fp, fn = (weights @ m for m in per_row)  # [b, C]; exact: integer sums well below 2**24
        if metric == "micro_f1":
            values.append(f1_from_counts(tp.sum(1), fp.sum(1), fn.sum(1)))
            continue
        if metric == "weighted_f1":
            support = (tp + fn).astype(np.float64)
            total = support.sum(1)
            weighted = (f1_from_counts(tp, fp, fn) * support).sum(1)
            values.append(np.divide(weighted, total, out=np.zeros_like(total), where=total > 0))
        else:
            values.append(macro_f1_from_counts(tp, fp, fn, task))
    low, high = np.percentile(np.concatenate(values), [2.5, 97.5])
    return float(low), float(high)


# ---------------------------------------------------------------- write_report


def write_report(
    directory: str | Path,
    metrics: dict,
    scores: np.ndarray,
    targets: np.ndarray,
    task: str,
    label_names: Sequence[str],
    history: dict[str, Sequence[tuple[float, float]]] | None = None,
) -> list[Path]:
    """Write tables and figures for ``metrics`` (from :func:`full_metrics`) into ``directory``; return the paths.

    Always: ``per_label.csv``, ``per_label.md`` (sorted by support), ``per_label_f1.png``, ``pr_curves.png``.
    multilabel: ``cooccurrence.png`` (of the true labels) and ``errors.png`` (per-label FP and FN rates at the
    decision rule ``metrics`` was computed with). multiclass: ``confusion_matrix.png``. ``training_curves.png`` when
    ``history`` (metric name -> [(step, value), ...]) is given.
    """
    _check_task(task)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    scores = np.asarray(scores, dtype=np.float64)
    onehot = one_hot_targets(targets, scores.shape[1], task)
    per_label = metrics["per_label"]
    if len(per_label) != len(label_names) or len(label_names) != scores.shape[1]:
        raise ValueError("metrics['per_label'], label_names and scores disagree on the number of labels")

    written = [_write_csv(directory / "per_label.csv", per_label)]
    written.append(_write_markdown(directory / "per_label.md", per_label))
    written.append(_plot_per_label_f1(directory / "per_label_f1.png", per_label, metrics))
    written.append(_plot_pr_curves(directory / "pr_curves.png", scores, onehot, per_label))
    if task == "multilabel":
        written.append(_plot_cooccurrence(directory / "cooccurrence.png", onehot, label_names))
        written.append(_plot_errors(directory / "errors.png", per_label, len(onehot)))
    else:
        written.append(_plot_confusion(directory / "confusion_matrix.png", metrics["confusion_matrix"], label_names))
    if history:
        written.append(_plot_history(directory / "training_curves.png", history))
    return written


def _write_csv(path: Path, per_label: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(per_label[0]) if per_label else ["label"])
        writer.writeheader()
        for row in per_label:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def _write_markdown(path: Path, per_label: list[dict]) -> Path:
    columns = list(per_label[0]) if per_label else ["label"]
    rows = sorted(per_label, key=lambda r: -r["support"])  # stable: ties keep label order
    rule = "|" + "|".join("---" if c == "label" else "---:" for c in columns) + "|"
    lines = ["| " + " | ".join(columns) + " |", rule]
    lines += ["| " + " | ".join(_format(row[c]) for c in columns) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# plotting: a bare Figure with an Agg canvas, so no global pyplot state or backend switch


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(path, bbox_inches="tight")
    return path


def _label_fontsize(num_labels: int) -> float:
    return 9 if num_labels <= 12 else 7 if num_labels <= 40 else 5


def _plot_per_label_f1(path: Path, per_label: list[dict], metrics: dict) -> Path:
    rows = sorted(per_label, key=lambda r: r["support"])  # largest support at the top of a barh
    num = len(rows)
    fig = _figure(7, max(2.5, 0.26 * num + 1.2))
    ax = fig.add_subplot()
    y = np.arange(num)
    ax.barh(y, [r["f1"] for r in rows], color="tab:blue")
    ax.set_yticks(y, [f"{r['label']} (n={r['support']})" for r in rows], fontsize=_label_fontsize(num))
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    if "macro_f1" in metrics:
        ax.axvline(metrics["macro_f1"], color="tab:red", linestyle="--", linewidth=1, label="macro-F1")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Per-label F1 (sorted by support)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _plot_pr_curves(path: Path, scores: np.ndarray, onehot: np.ndarray, per_label: list[dict]) -> Path:
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
        positives = int(onehot[:, c].sum())
        if positives == 0:
            ax.text(0.5, 0.5, "no positives", ha="center", va="center", fontsize=fontsize, transform=ax.transAxes)
        else:
            precision, recall, _ = precision_recall_curve(onehot[:, c], scores[:, c])
            ax.plot(recall, precision, linewidth=1)
            ax.axhline(positives / len(onehot), color="grey", linestyle=":", linewidth=0.8)  # chance level
            ax.plot([entry["recall"]], [entry["precision"]], "o", color="tab:red", markersize=3)  # operating point
        ap = entry.get("average_precision")
        title = entry["label"] if ap is None else f"{entry['label']} AP={ap:.2f}"
        ax.set_title(title, fontsize=fontsize)
        ax.tick_params(labelsize=fontsize - 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
    fig.supxlabel("recall", fontsize=9)
    fig.supylabel("precision", fontsize=9)
    fig.suptitle("Precision-recall curves (dot: operating point)", fontsize=10)
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


def _plot_cooccurrence(path: Path, onehot: np.ndarray, label_names: Sequence[str]) -> Path:
    counts = onehot.T.astype(np.float64) @ onehot.astype(np.float64)
    support = np.diag(counts).copy()
    # P(column label | row label): how often the column label accompanies the row label; diagonal left blank
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


def _plot_errors(path: Path, per_label: list[dict], num_rows: int) -> Path:
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
    ax.set_title("Per-label error rates at the decision thresholds")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _plot_confusion(path: Path, confusion: list[list[int]], label_names: Sequence[str]) -> Path:
    counts = np.asarray(confusion, dtype=np.float64)
    totals = counts.sum(1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    num = len(label_names)
    size = max(4.0, 0.35 * num + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    image = _heatmap(ax, normalised, label_names, "Blues", annotate=False, fmt="")
    if num <= 30:  # counts in the cells, shaded by the row-normalised rate
        for i in range(num):
            for j in range(num):
                color = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (counts; colour row-normalised)")
    return _save(fig, path)


def _plot_history(path: Path, history: dict[str, Sequence[tuple[float, float]]]) -> Path:
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
        ax.set_title(names[i], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle("Training curves", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
