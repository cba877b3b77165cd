"""A validation split carved from train when a source has none."""

from __future__ import annotations

import logging

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit
from sklearn.model_selection import StratifiedShuffleSplit

from src.data.records import LabelledData
from src.errors import DataError

logger = logging.getLogger(__name__)


def carve_validation(data: LabelledData, fraction: float, seed: int) -> LabelledData:
    """Return ``data`` with ``fraction`` of train moved to a new ``val`` split (unchanged if it has one).

    The carve is stratified and reproducible by ``seed``: iterative stratification over the label sets for
    multi-label data, per-class stratification for multi-class data and for a single label (iterative
    stratification refuses one column). A class with fewer than 2 train records cannot be in both parts, so its
    records stay in train and the others are stratified.
    """
    if "val" in data.splits:
        return data
    if not 0 < fraction < 1:
        raise DataError(f"the validation fraction must be between 0 and 1 (exclusive), got {fraction}")
    train = data.splits["train"]
    targets = data.targets("train")
    try:
        if not data.label_space.exclusive and data.num_labels > 1:
            splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            _, val = next(splitter.split(np.zeros(len(train)), targets))
        else:
            classes = targets.argmax(axis=1) if data.label_space.exclusive else targets[:, 0].astype(np.int64)
            pool = np.flatnonzero(np.bincount(classes)[classes] >= 2)
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            _, picked = next(splitter.split(np.zeros(len(pool)), classes[pool]))
            val = pool[picked]
    except ValueError as exc:
        raise DataError(
            f"cannot carve a stratified {fraction:g} validation split from {len(train)} train rows ({exc}). "
            "Provide a validation file, or change the fraction."
        ) from exc
    val = np.sort(val)
    keep = np.setdiff1d(np.arange(len(train)), val)
    logger.info(
        "no validation split: carved %s%% (%d rows) of train, stratified, seed %d",
        f"{fraction * 100:g}",
        len(val),
        seed,
    )
    splits = {"train": train.subset(keep), "val": train.subset(val)}
    splits.update({name: split for name, split in data.splits.items() if name != "train"})
    return data.with_splits(splits)
