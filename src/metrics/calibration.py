"""Whether scores mean what they say: per-label reliability and expected calibration error (ECE).

Each label is its own binary problem for either task (class-wise calibration): a score of 0.3 should be followed by
the label 30% of the time. Scores are binned into equal-width bins on [0, 1] (bin ``b`` holds ``b/B <= s <
(b+1)/B``, the last bin closed); a label's ECE is the row-weighted mean over its non-empty bins of
``|positive rate - mean score|``. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Reliability bins on [0, 1]; 10 is the convention (Guo et al. 2017) and keeps bins populated on small splits.
BINS = 10


@dataclass(frozen=True)
class Reliability:
    """Per label and bin ``[C, B]``: rows, mean score and positive rate (NaN in an empty bin)."""

    rows: np.ndarray
    mean_score: np.ndarray
    positive_rate: np.ndarray

    @property
    def ece(self) -> np.ndarray:
        """Per-label expected calibration error ``[C]``."""
        weight = self.rows / np.maximum(self.rows.sum(1, keepdims=True), 1)
        return np.nansum(weight * np.abs(self.positive_rate - self.mean_score), axis=1)


def reliability(scores, targets, bins: int = BINS) -> Reliability:
    """Bin every label's scores ``[N, C]`` against its 0/1 targets."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)  # [N, C]
    num_labels = scores.shape[1]
    flat = (index + bins * np.arange(num_labels)[None, :]).ravel()  # one bin id per (label, bin)

    def per_bin(weights):
        return np.bincount(flat, weights=weights.ravel(), minlength=num_labels * bins).reshape(num_labels, bins)

    rows = per_bin(np.ones_like(scores))
    with np.errstate(invalid="ignore", divide="ignore"):
        return Reliability(rows, per_bin(scores) / rows, per_bin(targets) / rows)


def expected_calibration_error(scores, targets, bins: int = BINS) -> np.ndarray:
    return reliability(scores, targets, bins).ece

