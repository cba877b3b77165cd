"""Uncertainty of metrics: bootstrap intervals over examples, paired tests over seeds, and the paired bootstrap
between two groups of runs. Torch-free (``src.compare`` uses it without importing the training stack).

Every resampling draws example indices with replacement: resample ``b`` is the ``b``-th
``rng.integers(0, N, size=N)`` on ``rng = np.random.default_rng(seed)``, exactly what a naive loop would draw. Draws
are turned into count weights, so a block of resamples is scored by one matrix product
(:func:`src.metrics.counts.confusion` with ``weights``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from src.labels import LabelSpace
from src.metrics.counts import confusion

#: Metrics :func:`bootstrap_ci` resamples (for a multi-class space also its alias ``accuracy``).
BOOTSTRAP_METRICS = ("macro_f1", "micro_f1", "weighted_f1", "samples_f1", "exact_match", "hamming_loss")


def resample_weights(num_rows: int, n: int, seed: int) -> Iterator[np.ndarray]:
    """Blocks of resample weights: row ``b`` counts how often each data row is drawn in resample ``b``."""
    rng = np.random.default_rng(seed)
    block = max(1, min(n, (1 << 22) // max(num_rows, 1)))  # ~16 MiB of float32 weights at a time
    for start in range(0, n, block):
        size = min(block, n - start)
        weights = np.empty((size, num_rows), dtype=np.float32)
        for i in range(size):
            weights[i] = np.bincount(rng.integers(0, num_rows, size=num_rows), minlength=num_rows)
        yield weights


def resampled_metric(space: LabelSpace, metric: str, targets: np.ndarray, decisions: np.ndarray,
                     weights: np.ndarray) -> np.ndarray:
    """``metric`` (a :data:`BOOTSTRAP_METRICS` name or an alias of the space) of bool ``[N, C]`` decisions, once per
    row of draw counts ``weights`` ``[B, N]``; conventions of :func:`src.metrics.classification.decision_metrics`."""
    metric = space.headline_names().get(metric, metric)
    if metric not in BOOTSTRAP_METRICS:
        names = [*BOOTSTRAP_METRICS, *space.headline_names()]
        raise ValueError(f"bootstrap metric must be one of {names}, got {metric!r}")
    rows = weights.sum(1)
    if metric in ("samples_f1", "exact_match", "hamming_loss"):  # means of a per-row value
        per_row = confusion(targets.T, decisions.T).numpy()
        errors = per_row.fp + per_row.fn
        value = {"samples_f1": per_row.f1(), "exact_match": (errors == 0).astype(np.float64),
                 "hamming_loss": errors / targets.shape[1]}[metric]
        return weights.astype(np.float64) @ value / rows
    counts = confusion(targets, decisions, weights).numpy()
    if metric == "micro_f1":
        return counts.micro_f1()
    if metric == "weighted_f1":
        return counts.weighted_f1()
    return space.macro(counts.f1(), counts.tp, counts.fp, counts.fn)


def bootstrap_ci(space: LabelSpace, targets, decisions, metric: str = "macro_f1", n: int = 1000,
                 seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval (2.5th and 97.5th percentiles, linear interpolation) of a headline metric of
    fixed decisions (thresholds are not re-tuned per resample). 1000 resamples of 5k rows x 28 labels take well under
    a second."""
    targets, decisions = np.asarray(targets, dtype=bool), np.asarray(decisions, dtype=bool)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(targets) == 0:
        raise ValueError("cannot bootstrap zero rows")
    values = [resampled_metric(space, metric, targets, decisions, w) for w in resample_weights(len(targets), n, seed)]
    low, high = np.percentile(np.concatenate(values), [2.5, 97.5])
    return float(low), float(high)


# ---------------------------------------------------------------- comparing two groups of runs


def _finite(p: float) -> float | None:
    return None if math.isnan(p) else float(p)


def paired_tests(best: np.ndarray, other: np.ndarray) -> tuple[float | None, float | None]:
    """p-values of scipy's paired t-test and Wilcoxon signed-rank test; None with fewer than 2 pairs or when no pair
    differs (both tests are undefined then)."""
    from scipy.stats import ttest_rel, wilcoxon

    if len(best) < 2 or np.array_equal(best, other):
        return None, None
    with warnings.catch_warnings():  # constant differences: scipy warns about precision but its p-values stand
        warnings.simplefilter("ignore", RuntimeWarning)
        return _finite(ttest_rel(best, other).pvalue), _finite(wilcoxon(best, other).pvalue)


@dataclass(frozen=True)
class Bootstrap:
    """Macro-F1 of the best group minus the other's: observed, 95% percentile interval, two-sided p-value."""

    difference: float
    low: float
    high: float
    p: float


def paired_bootstrap(space: LabelSpace, targets, best: Sequence[np.ndarray], other: Sequence[np.ndarray],
                     n: int = 2000, seed: int = 0) -> Bootstrap:
    """Paired bootstrap of the macro-F1 difference ``best - other`` over examples.

    ``targets`` and every decision array are 0/1 ``[N, C]``; ``best`` and ``other`` hold one decision array per
    matched seed. Each resample uses the same draw for every seed and takes the difference of the seed-averaged
    macro-F1s. p is twice the fraction of resamples on the other side of 0 from the observed difference (``<= 0``
    when it is positive), capped at 1; 1 when it is 0.
    """
    truth = np.asarray(targets, dtype=bool)
    decisions = [np.asarray(d, dtype=bool) for d in (*best, *other)]

    def difference(weights: np.ndarray) -> np.ndarray:
        scores = [resampled_metric(space, "macro_f1", truth, d, weights) for d in decisions]
        return np.mean(scores[: len(best)], axis=0) - np.mean(scores[len(best):], axis=0)

    observed = float(difference(np.ones((1, len(truth)), dtype=np.float32))[0])
    resampled = np.concatenate([difference(w) for w in resample_weights(len(truth), n, seed)])
    low, high = np.percentile(resampled, [2.5, 97.5])
    if observed == 0:
        p = 1.0
    else:
        crossing = resampled <= 0 if observed > 0 else resampled >= 0
        p = min(1.0, 2 * float(crossing.mean()))
    return Bootstrap(observed, float(low), float(high), p)
