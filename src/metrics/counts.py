"""Confusion counts, the one implementation behind every F1-family number: the training curves, the report,
threshold tuning, the bootstrap and ``src.compare``.

Targets and decisions are bool ``[N, C]`` matrices (what :class:`~src.labels.LabelSpace` produces for either task).
Counts work on numpy arrays and on torch tensors alike (the training loop keeps them on its device), and with
``weights`` (``[B, N]`` draw counts, numpy) give ``B`` weighted counts in one matrix product, which is how the
bootstrap scores a block of resamples at once. Torch-free, so ``src.compare`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Counts:
    """Per-label true positives, false positives and false negatives over the last axis."""

    tp: Any
    fp: Any
    fn: Any

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def numpy(self) -> Counts:
        """Float64 numpy counts (from torch tensors on any device, too)."""
        def convert(x):
            return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)

        return Counts(convert(self.tp), convert(self.fp), convert(self.fn))

    @property
    def support(self) -> np.ndarray:
        return np.asarray(self.tp) + np.asarray(self.fn)

    def precision(self) -> np.ndarray:
        return ratio(self.tp, np.asarray(self.tp) + np.asarray(self.fp))

    def recall(self) -> np.ndarray:
        return ratio(self.tp, self.support)

    def f1(self) -> np.ndarray:
        """Per-label F1 = 2TP / (2TP + FP + FN), 0 where that is 0/0 (scikit-learn's ``zero_division=0``)."""
        tp = np.asarray(self.tp, dtype=np.float64)
        return ratio(2 * tp, 2 * tp + np.asarray(self.fp) + np.asarray(self.fn))

    def micro_f1(self) -> np.ndarray:
        return Counts(*(np.asarray(x, dtype=np.float64).sum(-1) for x in (self.tp, self.fp, self.fn))).f1()

    def weighted_f1(self) -> np.ndarray:
        """F1 averaged over labels weighted by their support (scikit-learn's ``average="weighted"``)."""
        support = self.support.astype(np.float64)
        return ratio((self.f1() * support).sum(-1), support.sum(-1))


def ratio(numerator, denominator) -> np.ndarray:
    """``numerator / denominator`` as float64, 0 where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape),
                     where=denominator > 0)


def confusion(targets, decisions, weights: np.ndarray | None = None) -> Counts:
    """Counts of bool ``[N, C]`` ``targets`` vs ``decisions``: summed over rows (``[C]``), or with draw counts
    ``weights`` ``[B, N]`` one set of counts per draw (``[B, C]``; exact in float32 below 2**24 rows)."""
    hits, false_alarms, misses = targets & decisions, ~targets & decisions, targets & ~decisions
    if weights is None:
        return Counts(hits.sum(0), false_alarms.sum(0), misses.sum(0))
    return Counts(*(weights @ m.astype(np.float32) for m in (hits, false_alarms, misses)))
