"""F1 from counts, shared by the report, threshold tuning and src.compare (torch-free, so compare stays light)."""

from __future__ import annotations

import numpy as np


def f1_from_counts(tp, fp, fn) -> np.ndarray:
    """F1 = 2TP / (2TP + FP + FN), 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def macro_f1_from_counts(tp, fp, fn, task: str) -> np.ndarray:
    """Macro-F1 over the last axis of per-label counts: multi-label over all labels, multi-class over the classes
    present in the targets or predictions (torchmetrics' and the report's convention)."""
    f1 = f1_from_counts(tp, fp, fn)
    if task == "multilabel":
        return f1.mean(-1)
    present = (np.asarray(tp) + np.asarray(fp) + np.asarray(fn)) > 0
    return (f1 * present).sum(-1) / np.maximum(present.sum(-1), 1)


def one_hot_targets(targets, num_labels: int, task: str) -> np.ndarray:
    """Targets as a bool [N, C] matrix: multilabel 0/1 [N, C]; multiclass class indices [N] or one-hot [N, C]."""
    targets = np.asarray(targets)
    if task == "multiclass" and targets.ndim == 1:
        if targets.size and (targets.min() < 0 or targets.max() >= num_labels):
            raise ValueError(f"class indices must lie in [0, {num_labels})")
        out = np.zeros((len(targets), num_labels), dtype=bool)
        out[np.arange(len(targets)), targets.astype(np.int64)] = True
        return out
    if targets.ndim != 2 or targets.shape[1] != num_labels:
        raise ValueError(f"targets must be [N, {num_labels}], got shape {targets.shape}")
    return targets.astype(bool)
