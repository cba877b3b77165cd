"""The one data contract every source yields and everything downstream consumes.

A source returns a :class:`LabelledData`: named splits of ``(text, label ids)`` records, the label
vocabulary, and the task type. Samplers, losses, metrics, thresholds and predict work from this alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from src.errors import DataError

Task = Literal["multilabel", "multiclass"]
TASKS: tuple[str, ...] = ("multilabel", "multiclass")
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass
class Split:
    """Texts with their label ids (a list per text: several for multi-label, exactly one for multi-class)."""

    texts: list[str]
    labels: list[list[int]]
    origin: list[str] = field(default_factory=list)  # "file:line" per record, for error messages

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} label lists")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: np.ndarray | list[int]) -> Split:
        return Split(
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            origin=[self.origin[i] for i in indices] if self.origin else [],
        )

    def label_counts(self, num_labels: int) -> np.ndarray:
        """Rows carrying each label."""
        counts = np.zeros(num_labels, dtype=np.int64)
        for ids in self.labels:
            counts[ids] += 1
        return counts

    def targets(self, task: str, num_labels: int) -> np.ndarray:
        """What a loss or metric compares with: multi-hot ``[N, C]`` rows (multi-label) or class ids ``[N]``."""
        if task == "multilabel":
            return self.multi_hot(num_labels)
        return np.asarray([ids[0] for ids in self.labels], dtype=np.int64)

    def multi_hot(self, num_labels: int) -> np.ndarray:
        """``[N, C]`` 0/1 matrix of the label sets."""
        matrix = np.zeros((len(self), num_labels), dtype=np.float32)
        for row, ids in enumerate(self.labels):
            matrix[row, ids] = 1.0
        return matrix


@dataclass
class LabelledData:
    """Named splits (``train`` required; ``val``/``test`` optional) over one label vocabulary."""

    splits: dict[str, Split]
    label_names: list[str]
    task: Task

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"task must be one of {TASKS}, got {self.task!r}")
        if "train" not in self.splits:
            raise DataError("a dataset needs a 'train' split")
        if len(set(self.label_names)) != len(self.label_names):
            raise DataError(f"label names are not unique: {self.label_names}")
        for name, split in self.splits.items():
            if name not in SPLITS:
                raise DataError(f"unknown split {name!r}; expected one of {SPLITS}")
            self._check(name, split)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def label_counts(self, split: str = "train") -> np.ndarray:
        """Positives per label in ``split`` (for pos_weight, class weights, samplers)."""
        return self.splits[split].label_counts(self.num_labels)

    def _check(self, name: str, split: Split) -> None:
        for row, (text, ids) in enumerate(zip(split.texts, split.labels)):
            where = split.origin[row] if split.origin else f"{name} split, record {row}"
            if not text or not text.strip():
                raise DataError(f"{where}: empty text. Remove the row or give it a text.")
            if self.task == "multiclass" and len(ids) != 1:
                raise DataError(
                    f"{where}: a multiclass record needs exactly one label, got {len(ids)}. "
                    "Use data.task=multilabel if records can have several labels."
                )
            bad = [i for i in ids if not 0 <= i < self.num_labels]
            if bad:
                raise DataError(f"{where}: label ids {bad} outside 0..{self.num_labels - 1}")
