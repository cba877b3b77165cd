"""Every evaluation number of one split, from probabilities, 0/1 targets and the decisions made from them.

F1-family metrics come from :mod:`src.metrics.counts` (scikit-learn's ``zero_division=0`` convention); ranking
metrics (average precision, AUROC) from torchmetrics, computed per label where they are defined.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional.classification import multilabel_auroc, multilabel_average_precision

from src.labels import LabelSpace
from src.metrics.calibration import expected_calibration_error
from src.metrics.counts import Counts, confusion

#: Headline metrics computed from decisions alone (what the bootstrap can resample).
DECISION_METRICS = ("macro_f1", "micro_f1", "weighted_f1", "samples_f1", "exact_match", "hamming_loss")


def check_inputs(space: LabelSpace, scores, targets) -> tuple[np.ndarray, np.ndarray]:
    """Float64 scores and bool targets, both ``[N, C]`` with the space's C, or a ValueError saying what is off."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets).astype(bool)
    if scores.ndim != 2 or scores.shape[1] != space.num_labels or targets.shape != scores.shape:
        raise ValueError(f"scores and targets must both be [N, {space.num_labels}]; got {scores.shape} and "
                         f"{targets.shape}")
    return scores, targets


def decision_metrics(space: LabelSpace, targets: np.ndarray, decisions: np.ndarray) -> dict[str, float]:
    """The headline numbers of bool ``[N, C]`` decisions against bool targets (plus the space's aliases, e.g.
    multi-class ``accuracy``)."""
    counts = confusion(targets, decisions)
    per_row = confusion(targets.T, decisions.T).numpy()  # each row is a "label" of the transposed problem
    errors = np.asarray(per_row.fp) + np.asarray(per_row.fn)
    rows = max(len(targets), 1)
    out = {
        "macro_f1": float(space.macro(counts.numpy().f1(), counts.tp, counts.fp, counts.fn)),
        "micro_f1": float(counts.numpy().micro_f1()),
        "weighted_f1": float(counts.numpy().weighted_f1()),
        "samples_f1": float(per_row.f1().sum() / rows),
        "exact_match": float((errors == 0).sum() / rows),
        "hamming_loss": float(errors.sum() / (rows * space.num_labels)),
    }
    out.update({alias: out[name] for alias, name in space.headline_names().items()})
    return out


def bucket_macro_f1(space: LabelSpace, targets: np.ndarray, decisions: np.ndarray) -> dict[str, float]:
    """``<bucket>_macro_f1`` over the head, medium and tail labels by training frequency
    (:meth:`LabelSpace.frequency_buckets`): a model can gain macro-F1 on frequent labels while its rare ones
    collapse, which the overall number hides. Macro as :meth:`LabelSpace.macro` (multi-class: present classes)."""
    counts = confusion(targets, decisions).numpy()
    f1 = counts.f1()
    return {f"{bucket}_macro_f1": float(space.macro(f1[labels], counts.tp[labels], counts.fp[labels],
                                                    counts.fn[labels]))
            for bucket, labels in space.frequency_buckets().items()}


def full_metrics(space: LabelSpace, scores, targets, thresholds=None) -> dict:
    """All metrics of probabilities ``scores`` against 0/1 ``targets`` (both ``[N, C]``), deciding with
    ``space.decide(scores, thresholds)``.

    Returns :func:`decision_metrics` plus ``mean_average_precision`` and ``macro_auroc`` (macro over the labels where
    they are defined: AP needs a positive, AUROC a positive and a negative; NaN if none), ``mean_ece`` (the labels'
    mean expected calibration error, :mod:`src.metrics.calibration`), ``n_samples``, ``n_labels``,
    ``n_labels_without_positives``, ``confusion_matrix`` (rows: true label, columns: decided label; for multi-class
    the usual confusion matrix) and ``per_label``: one dict per label with label, support, precision, recall, f1,
    tp, fp, fn, threshold (None where decisions are arg-max), average_precision and auroc (None where undefined),
    ece.
    """
    scores, targets = check_inputs(space, scores, targets)
    decisions = space.decide(scores, thresholds)
    counts = confusion(targets, decisions).numpy()
    out: dict = decision_metrics(space, targets, decisions)
    ap, auroc = ranking_metrics(scores, targets)
    defined_ap = [v for v in ap if v is not None]
    defined_auroc = [v for v in auroc if v is not None]
    out["mean_average_precision"] = float(np.mean(defined_ap)) if defined_ap else math.nan
    out["macro_auroc"] = float(np.mean(defined_auroc)) if defined_auroc else math.nan
    ece = expected_calibration_error(scores, targets)
    out["mean_ece"] = float(ece.mean()) if len(scores) else math.nan
    out["n_samples"] = int(len(scores))
    out["n_labels"] = space.num_labels
    out["n_labels_without_positives"] = int((targets.sum(0) == 0).sum())
    out["confusion_matrix"] = (targets.T.astype(np.int64) @ decisions.astype(np.int64)).tolist()
    out["per_label"] = per_label_rows(space, counts, thresholds, ap, auroc, ece)
    return out


def per_label_rows(space: LabelSpace, counts: Counts, thresholds, ap: list, auroc: list,
                   ece: np.ndarray) -> list[dict]:
    precision, recall, f1 = counts.precision(), counts.recall(), counts.f1()
    cut = None
    if space.thresholded:
        cut = [0.5] * space.num_labels if thresholds is None else [float(t) for t in thresholds.per_label]
    return [
        {
            "label": name,
            "support": int(counts.support[c]),
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "tp": int(counts.tp[c]),
            "fp": int(counts.fp[c]),
            "fn": int(counts.fn[c]),
            "threshold": None if cut is None else cut[c],
            "average_precision": ap[c],
            "auroc": auroc[c],
            "ece": float(ece[c]),
        }
        for c, name in enumerate(space.names)
    ]


def ranking_metrics(scores: np.ndarray, targets: np.ndarray) -> tuple[list[float | None], list[float | None]]:
    """Per-label average precision (where the label has a positive) and AUROC (a positive and a negative)."""
    num_labels = scores.shape[1]
    positives = targets.sum(0)
    ap: list[float | None] = [None] * num_labels
    auroc: list[float | None] = [None] * num_labels
    probs, target = torch.from_numpy(scores), torch.from_numpy(targets.astype(np.int64))
    for values, columns, metric in (
        (ap, np.flatnonzero(positives > 0), multilabel_average_precision),
        (auroc, np.flatnonzero((positives > 0) & (positives < len(targets))), multilabel_auroc),
    ):
        if columns.size:
            result = metric(probs[:, columns], target[:, columns], num_labels=len(columns), average="none",
                            validate_args=False)
            for c, value in zip(columns, result.reshape(-1).tolist()):
                values[c] = float(value)
    return ap, auroc
