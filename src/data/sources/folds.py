"""One fold of k-fold cross-validation as a data source: ``cv.folds=K`` wraps the configured source in this.

The development rows (train, plus val when the source has one) are dealt into K folds, stratified and seeded:
iterative stratification over the label sets for multi-label data, per-class stratification for multi-class data.
Fold ``i`` is the validation split and the other folds are train; a test split is left as it is (held out from
every fold), so each fold model is tested on the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from src.data.records import LabelledData, Split
from src.errors import ConfigError


def development_rows(data: LabelledData) -> Split:
    """Train followed by val (when there is one): the rows the folds are dealt from, in this order."""
    parts = [data.splits[name] for name in ("train", "val") if name in data.splits]
    return Split([t for p in parts for t in p.texts], [ids for p in parts for ids in p.labels],
                 [o for p in parts for o in p.origin] if all(p.origin for p in parts) else [])


def fold_of_each_row(data: LabelledData, folds: int, seed: int) -> np.ndarray:
    """The fold (0..K-1) of every development row; refuses a K the data cannot fill."""
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ConfigError(f"cv.folds={folds}: cross-validation needs at least 2 folds (e.g. cv.folds=5); "
                          "cv.folds=null trains once.")
    rows = development_rows(data)
    space = data.label_space
    targets = space.targets(rows.labels)
    short = [f"{name} ({int(n)} rows)" for name, n in zip(data.label_names, targets.sum(0)) if 0 < n < folds]
    if len(rows) < folds or short:
        what = (f"only {len(rows)} rows" if len(rows) < folds
                else f"labels with fewer rows than folds: {', '.join(short)}")
        raise ConfigError(f"cv.folds={folds}: {what}; every fold's validation split needs each label. Use fewer "
                          "folds, or merge or drop those labels.")
    if space.exclusive or space.num_labels == 1:  # iterative stratification refuses a single label column
        from sklearn.model_selection import StratifiedKFold

        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        classes = targets.argmax(1) if space.exclusive else targets[:, 0].astype(np.int64)
    else:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        splitter = MultilabelStratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        classes = targets
    assignment = np.empty(len(rows), dtype=np.int64)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(rows)), classes)):
        assignment[held_out] = fold
    return assignment


class FoldSource:
    """``source``'s data with fold ``fold`` of ``folds`` as val and the rest as train."""

    def __init__(self, source: Any, folds: int, fold: int, seed: int):
        if not isinstance(fold, int) or not 0 <= fold < folds:
            raise ConfigError(f"cv.fold={fold}: folds are numbered 0 to {folds - 1} (cv.folds={folds}).")
        self.source, self.folds, self.fold, self.seed = source, folds, fold, seed

    def load(self) -> LabelledData:
        data = self.source.load()
        rows = development_rows(data)
        assignment = fold_of_each_row(data, self.folds, self.seed)
        splits = {"train": rows.subset(np.flatnonzero(assignment != self.fold)),
                  "val": rows.subset(np.flatnonzero(assignment == self.fold))}
        if "test" in data.splits:
            splits["test"] = data.splits["test"]
        return data.with_splits(splits)
