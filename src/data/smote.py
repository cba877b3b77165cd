"""Synthetic training rows in embedding space (``sampler=smote``): SMOTE for multi-class, MLSMOTE for multi-label.

Token ids cannot be interpolated, so these samplers work on numeric features only: the frozen-encoder embeddings
of the training split (``model=frozen_encoder``). Val and test are never touched.

- **Multi-class**: imbalanced-learn's ``SMOTE``. Every class is raised to ``ceil(ratio * largest)`` rows, as
  ``sampler=oversample`` does, but with new points on segments between a row and one of its ``k_neighbors``
  nearest same-class rows instead of repeated rows.
- **Multi-label**: MLSMOTE (Charte et al. 2015, "MLSMOTE: Approaching imbalanced multilabel learning through
  synthetic instance generation"). A label is a minority label when its imbalance ratio
  ``IRLbl = max_count / count`` exceeds the mean over labels (MeanIR). For each minority label, each row carrying it
  (a seed) gets a synthetic row ``x + u * (neighbour - x)``, ``u ~ U(0, 1)``, with ``neighbour`` drawn from its
  ``k_neighbors`` nearest (Euclidean) rows that carry the label; the synthetic label set is the paper's ranking
  rule: the labels held by more than half of the seed and its k neighbours (so it always holds the minority label).
  One ``u`` per row, as in SMOTE, keeps the point on the segment; the paper's pseudo-code draws one per feature.

Both stop a class/label at ``ceil(ratio * largest)`` rows/positives and add at most ``max_new`` times its count
(``max_new=1``: one synthetic row per seed, the paper's MLSMOTE). A class/label with a single row has no
neighbour and is skipped; one with at most ``k_neighbors`` rows uses fewer neighbours (both logged).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from imblearn.over_sampling import SMOTE
from sklearn.neighbors import NearestNeighbors

from src.errors import ConfigError
from src.labels import LabelSpace

log = logging.getLogger(__name__)


def imbalance_ratios(targets: np.ndarray) -> np.ndarray:
    """IRLbl per label of a multi-hot ``[N, C]`` matrix: the most frequent label's count over this label's count
    (``nan`` for a label without positives, which has nothing to oversample)."""
    counts = targets.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore"):
        return np.where(counts > 0, counts.max() / counts, np.nan)


def minority_labels(targets: np.ndarray) -> np.ndarray:
    """Labels whose IRLbl exceeds MeanIR (the mean IRLbl of the labels that occur)."""
    ratios = imbalance_ratios(targets)
    return np.flatnonzero(ratios > np.nanmean(ratios))


def new_count(count: int, largest: int, ratio: float, max_new: float | None) -> int:
    """Synthetic rows for a class/label of ``count`` rows: up to ``ceil(ratio * largest)`` in all, at most
    ``max_new * count`` new ones."""
    wanted = max(0, math.ceil(ratio * largest) - count)
    return wanted if max_new is None else min(wanted, math.floor(max_new * count))


def usable_neighbours(k: int, rows: int, what: str) -> int:
    """``k``, or fewer for a class/label with at most ``k`` rows (0: too small to interpolate), with a warning."""
    usable = min(k, rows - 1)
    if usable < 1:
        log.warning(f"sampler: {what} has a single training row: no neighbour to interpolate with, left as it is")
    elif usable < k:
        log.warning(f"sampler: {what} has only {rows} training rows: {usable} neighbours instead of {k}")
    return usable


def mlsmote(features: np.ndarray, targets: np.ndarray, k: int, ratio: float, max_new: float | None,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic ``(features, multi-hot targets)`` for the minority labels of ``targets`` (not the input rows)."""
    counts = targets.sum(axis=0).astype(int)
    new_features, new_targets = [], []
    for label in minority_labels(targets):
        bag = np.flatnonzero(targets[:, label] > 0)
        wanted = new_count(len(bag), counts.max(), ratio, max_new)
        neighbours_k = usable_neighbours(k, len(bag), f"label {label}") if wanted else 0
        if neighbours_k == 0:
            continue
        # without a query, kneighbors leaves each point out of its own neighbour list
        neighbours = NearestNeighbors(n_neighbors=neighbours_k).fit(features[bag]).kneighbors(return_distance=False)
        seeds = np.resize(rng.permutation(len(bag)), wanted)  # every seed once before any seed twice
        chosen = neighbours[seeds, rng.integers(neighbours_k, size=wanted)]
        gaps = rng.random((wanted, 1), dtype=features.dtype)
        seed_x, neighbour_x = features[bag[seeds]], features[bag[chosen]]
        new_features.append(seed_x + gaps * (neighbour_x - seed_x))
        # ranking rule: labels held by more than half of the seed and its k neighbours
        votes = targets[bag[seeds]] + targets[bag[neighbours[seeds]]].sum(axis=1)
        new_targets.append((votes > (neighbours_k + 1) / 2).astype(targets.dtype))
    if not new_features:
        return features[:0], targets[:0]
    return np.concatenate(new_features), np.concatenate(new_targets)


class SmoteResampler:
    """SMOTE (multi-class) or MLSMOTE (multi-label) on training embeddings; see the module docstring."""

    def __init__(self, k_neighbors: int = 5, ratio: float = 0.5, max_new: float | None = 1.0, seed: int = 0):
        if k_neighbors < 1:
            raise ConfigError(f"sampler.k_neighbors must be at least 1, got {k_neighbors}")
        if not 0 < ratio <= 1:
            raise ConfigError(f"sampler.ratio is the smallest-to-largest class ratio, in (0, 1]; got {ratio}")
        if max_new is not None and max_new <= 0:
            raise ConfigError(f"sampler.max_new caps new rows per class/label as a multiple of its rows: > 0 or "
                              f"null (no cap); got {max_new}")
        self.k_neighbors, self.ratio, self.max_new, self.seed = k_neighbors, ratio, max_new, seed

    def resample_features(self, features: np.ndarray, targets: np.ndarray,
                          space: LabelSpace) -> tuple[np.ndarray, np.ndarray]:
        """The training rows followed by the synthetic ones (0/1 ``[N, C]`` targets)."""
        if space.exclusive:
            new_features, classes = self.smote(features, targets.argmax(axis=1))
            resampled = new_features, np.eye(targets.shape[1], dtype=targets.dtype)[classes]
        else:
            rng = np.random.default_rng(self.seed)
            new_features, new_targets = mlsmote(features, targets, self.k_neighbors, self.ratio, self.max_new, rng)
            resampled = np.concatenate([features, new_features]), np.concatenate([targets, new_targets])
        log.info(f"sampler: {'SMOTE' if space.exclusive else 'MLSMOTE'} on the train embeddings (k_neighbors "
                 f"{self.k_neighbors}, ratio {self.ratio:g}, max_new {self.max_new}): "
                 f"{len(features):,} -> {len(resampled[0]):,} rows")
        return resampled

    def smote(self, features: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """imbalanced-learn's SMOTE, which takes one k for all classes: the smallest class grown sets it."""
        keys, counts = np.unique(classes, return_counts=True)
        goal, neighbours_k = {}, self.k_neighbors
        for key, count in zip(keys.tolist(), counts.tolist()):
            wanted = new_count(count, counts.max(), self.ratio, self.max_new)
            usable = usable_neighbours(self.k_neighbors, count, f"class {key}") if wanted else 0
            if usable:
                goal[key], neighbours_k = count + wanted, min(neighbours_k, usable)
        if not goal:
            return features, classes
        sampler = SMOTE(sampling_strategy=goal, k_neighbors=neighbours_k, random_state=self.seed)
        return sampler.fit_resample(features, classes)
