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




#: Per-label temperatures are fitted only for labels with at least this many validation positives (and as many
#: negatives); the others keep the shared temperature, since a handful of rows cannot pin a scale down.
MIN_ROWS_PER_LABEL = 10

#: The search range of log(T): temperatures between 1/20 and 20.
LOG_T_BOUNDS = (-3.0, 3.0)


def nll(logits, targets, exclusive: bool, temperature=1.0) -> np.ndarray:
    """Negative log-likelihood of ``logits / temperature`` (``temperature`` a scalar or ``[C]``): per row ``[N]`` of
    the softmax when ``exclusive``, else per row and label ``[N, C]`` of independent sigmoids."""
    x = np.asarray(logits, dtype=np.float64) / np.asarray(temperature, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    if exclusive:
        shifted = x - x.max(1, keepdims=True)
        return -(y * (shifted - np.log(np.exp(shifted).sum(1, keepdims=True)))).sum(1)
    return np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))  # log(1 + e^x) - xy, exact for large |x|


def fit_temperature(logits, targets, exclusive: bool, per_label: bool) -> np.ndarray:
    """Temperatures ``[C]`` minimising the validation NLL of ``logits / T`` (Guo et al. 2017): one shared value, or
    with ``per_label`` one per label (sigmoid outputs only: a softmax has one scale), labels with fewer than
    :data:`MIN_ROWS_PER_LABEL` positives or negatives keeping the shared one. Scaling is monotone per label, so
    rankings (ROC/PR curves) are unchanged; what changes is what a score of 0.7 means."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)

    def best(objective) -> float:
        found = minimize_scalar(objective, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-4})
        return float(np.exp(found.x))

    temperatures = np.full(logits.shape[1], best(lambda log_t: nll(logits, targets, exclusive, np.exp(log_t)).mean()))
    if per_label and not exclusive:
        positives = targets.sum(0)
        enough = (positives >= MIN_ROWS_PER_LABEL) & (len(targets) - positives >= MIN_ROWS_PER_LABEL)
        for c in np.flatnonzero(enough):
            temperatures[c] = best(lambda log_t, c=c: nll(logits[:, c], targets[:, c], False, np.exp(log_t)).mean())
    return temperatures
