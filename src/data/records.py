"""The one data contract every source yields and everything downstream consumes.

A source returns a :class:`LabelledData`: named splits of ``(text, label ids)`` records, the label
vocabulary, and the task type. Samplers, losses, metrics, thresholds and predict work from this alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src.errors import DataError
from src.labels import TASKS, LabelSpace, Task

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


@dataclass
class LabelledData:
    """Named splits (``train`` required; ``val``/``test`` optional) over one label vocabulary.

    ``facts`` is what the source found while reading, for the data checks: ``task_reason`` (the evidence that
    decided the task), ``encodings`` (split -> ``{"path", "encoding"}``) and ``warnings``. Derived data keeps them.
    """

    splits: dict[str, Split]
    label_names: list[str]
    task: Task
    facts: dict[str, Any] = field(default_factory=dict)

    def with_splits(self, splits: dict[str, Split]) -> LabelledData:
        """The same labels, task and facts over other splits."""
        return LabelledData(splits, self.label_names, self.task, self.facts)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"task must be one of {TASKS}, got {self.task!r}")
        if "train" not in self.splits:
            raise DataError("a dataset needs a 'train' split")
        space = LabelSpace(self.task, tuple(self.label_names))  # checks the names
        for name, split in self.splits.items():
            if name not in SPLITS:
                raise DataError(f"unknown split {name!r}; expected one of {SPLITS}")
            for row, (text, ids) in enumerate(zip(split.texts, split.labels)):
                where = split.origin[row] if split.origin else f"{name} split, record {row}"
                if not text or not text.strip():
                    raise DataError(f"{where}: empty text. Remove the row or give it a text.")
                space.check_row(ids, where)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def label_counts(self, split: str = "train") -> np.ndarray:
        """Rows per label in ``split`` (for pos_weight, class weights, samplers)."""
        return self.splits[split].label_counts(self.num_labels)

    @property
    def label_space(self) -> LabelSpace:
        """The task, the label names and the training rows per label."""
        train = self.splits["train"]
        return LabelSpace(self.task, tuple(self.label_names), tuple(self.label_counts("train")), len(train))

    def targets(self, split: str) -> np.ndarray:
        """Float32 0/1 ``[N, C]`` targets of ``split``."""
        return self.label_space.targets(self.splits[split].labels)
