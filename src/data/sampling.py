"""Random over- and undersampling of the training rows (``sampler=oversample|undersample``).

imbalanced-learn resamples one class label per row; multi-label rows have a label *set*, so they are mapped
to a single proxy class first:

- ``rarest`` (default): the row's rarest label by training frequency (rows without labels form their own
  class). Each label's rarest-carrying rows are what get repeated or dropped, so rare labels gain weight
  without the long tail of one-off label combinations.
- ``powerset``: the whole label set as one class (label powerset). Exact for combinations, but GoEmotions has
  hundreds of combinations seen once or twice, which undersampling then drives everything down to.

A multi-class row's rarest (only) label is its class, so either proxy keeps multi-class rows in their classes. Only
training rows are resampled; val and test are never touched.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import numpy as np
from imblearn.over_sampling import RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler

from src.errors import ConfigError

log = logging.getLogger(__name__)
PROXIES = ("rarest", "powerset")


def proxy_classes(targets: np.ndarray, proxy: str) -> np.ndarray:
    """One class key per row of 0/1 ``[N, C]`` targets."""
    if proxy == "powerset":
        _, keys = np.unique(targets.astype(bool), axis=0, return_inverse=True)
        return keys.reshape(-1)
    if proxy == "rarest":
        counts = targets.sum(axis=0)
        rarity = np.where(targets > 0, counts[None, :], np.inf)
        rarest = rarity.argmin(axis=1)
        return np.where(np.isinf(rarity.min(axis=1)), -1, rarest)  # -1: a row without labels
    raise ConfigError(f"sampler.proxy must be one of {PROXIES}, got {proxy!r}")


class RandomResampler:
    """Repeats (``mode=over``) or drops (``mode=under``) training rows until, per proxy class, the smallest
    class has at least ``ratio`` times the rows of the largest.

    Oversampling raises every class to ``ceil(ratio * largest)`` rows; undersampling cuts every class to
    ``max(smallest, floor(smallest / ratio))`` rows. Deterministic by ``seed``.
    """

    def __init__(self, mode: Literal["over", "under"], ratio: float = 0.5, proxy: str = "rarest", seed: int = 0):
        if mode not in ("over", "under"):
            raise ConfigError(f"sampler mode must be 'over' or 'under', got {mode!r}")
        if not 0 < ratio <= 1:
            raise ConfigError(f"sampler.ratio is the smallest-to-largest class ratio, in (0, 1]; got {ratio}")
        if proxy not in PROXIES:
            raise ConfigError(f"sampler.proxy must be one of {PROXIES}, got {proxy!r}")
        self.mode, self.ratio, self.proxy, self.seed = mode, ratio, proxy, seed

    def target_counts(self, classes: np.ndarray) -> dict[int, int]:
        keys, counts = np.unique(classes, return_counts=True)
        if self.mode == "over":
            goal = math.ceil(self.ratio * counts.max())
            return {int(k): int(max(c, goal)) for k, c in zip(keys, counts)}
        cap = max(int(counts.min()), math.floor(counts.min() / self.ratio))
        return {int(k): int(min(c, cap)) for k, c in zip(keys, counts)}

    def resample_indices(self, targets: np.ndarray) -> np.ndarray:
        """Row indices into the training split (repeats allowed), in imbalanced-learn's order."""
        classes = proxy_classes(targets, self.proxy)
        sampler_class = RandomOverSampler if self.mode == "over" else RandomUnderSampler
        sampler = sampler_class(sampling_strategy=self.target_counts(classes), random_state=self.seed)
        sampler.fit_resample(np.zeros((len(classes), 1)), classes)
        indices = np.asarray(sampler.sample_indices_)
        log.info(f"sampler: {self.mode}sampled train ({self.proxy} proxy, ratio {self.ratio:g}): "
                 f"{len(classes):,} -> {len(indices):,} rows")
        return indices
