"""The label space: the one place that knows multi-label from multi-class.

A :class:`LabelSpace` is built by the DataModule from the training split and handed to the model, the loss, the
metrics and the thresholds; it is saved once with the model. Everything else works on what it returns:

- **targets** are always a float ``[N, C]`` 0/1 matrix (one-hot rows for multi-class), so losses, metrics, samplers
  and reports handle both tasks with the same code;
- **scores** are probabilities: independent sigmoids (multi-label) or a softmax (multi-class);
- **decisions** are a bool ``[N, C]`` matrix: ``score > threshold`` per label (multi-label; 0.5 without tuned
  thresholds) or the one-hot arg-max (multi-class, where thresholds do not apply).

Where an algorithm itself differs between the tasks (a softmax loss, stratified vs iterative-stratified splits, SMOTE
vs MLSMOTE) it asks :attr:`LabelSpace.exclusive`, a fact about the labels, not a task string.

Torch-free: torch tensors are handled by duck typing, so ``src.compare`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from src.errors import ConfigError, DataError

Task = Literal["multilabel", "multiclass"]
TASKS: tuple[str, ...] = ("multilabel", "multiclass")
#: Hugging Face's name for each task (``config.problem_type``; ``pipeline()`` picks sigmoid or softmax by it).
PROBLEM_TYPES = {"multilabel": "multi_label_classification", "multiclass": "single_label_classification"}


@dataclass(frozen=True)
class LabelSpace:
    """Task, label names, training rows per label and number of training rows (``counts`` is None when unknown,
    e.g. for a checkpoint written before label spaces existed)."""

    task: Task
    names: tuple[str, ...]
    counts: tuple[int, ...] | None = None
    num_train: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise DataError(f"task must be one of {TASKS}, got {self.task!r}")
        object.__setattr__(self, "names", tuple(str(name) for name in self.names))
        if len(set(self.names)) != len(self.names):
            raise DataError(f"label names are not unique: {list(self.names)}")
        if self.counts is not None:
            object.__setattr__(self, "counts", tuple(int(count) for count in self.counts))
            if len(self.counts) != len(self.names):
                raise ValueError(f"{len(self.counts)} label counts for {len(self.names)} labels")

    # ---------------------------------------------------------------- facts

    @property
    def num_labels(self) -> int:
        return len(self.names)

    @property
    def exclusive(self) -> bool:
        """Exactly one label per row (multi-class)."""
        return self.task == "multiclass"

    @property
    def thresholded(self) -> bool:
        """Whether per-label decision thresholds apply (multi-label); multi-class decides by arg-max."""
        return not self.exclusive

    @property
    def problem_type(self) -> str:
        return PROBLEM_TYPES[self.task]

    def frequency_buckets(self) -> dict[str, np.ndarray]:
        """Label indices by training frequency: ``head`` (the most frequent third of the labels), ``medium`` and
        ``tail`` (the rarest third; sizes differ by at most one, ties in count keep label order). Empty without
        training counts or with fewer than 3 labels, where the thirds say nothing."""
        if self.counts is None or self.num_labels < 3:
            return {}
        order = np.argsort(-np.asarray(self.counts), kind="stable")
        head, medium, tail = np.array_split(order, 3)
        return {"head": np.sort(head), "medium": np.sort(medium), "tail": np.sort(tail)}

    # ---------------------------------------------------------------- rows and targets

    def check_row(self, ids: Sequence[int], where: str) -> None:
        """A DataError naming ``where`` for a row whose label ids do not fit this space."""
        if self.exclusive and len(ids) != 1:
            raise DataError(
                f"{where}: a multiclass record needs exactly one label, got {len(ids)}. "
                "Use data.source.task=multilabel if records can have several labels."
            )
        bad = [i for i in ids if not 0 <= i < self.num_labels]
        if bad:
            raise DataError(f"{where}: label ids {bad} outside 0..{self.num_labels - 1}")

    def targets(self, label_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Float32 ``[N, C]`` 0/1 targets of label-id lists (one-hot rows for multi-class)."""
        matrix = np.zeros((len(label_ids), self.num_labels), dtype=np.float32)
        for row, ids in enumerate(label_ids):
            matrix[row, list(ids)] = 1.0
        return matrix

    # ---------------------------------------------------------------- scores and decisions

    def scores(self, logits: Any) -> Any:
        """Probabilities of logits ``[N, C]``: numpy in, numpy out (float64); a torch tensor in, float32 out."""
        if isinstance(logits, np.ndarray):
            x = logits.astype(np.float64)
            if self.exclusive:
                shifted = np.exp(x - x.max(axis=-1, keepdims=True))
                return shifted / shifted.sum(axis=-1, keepdims=True)
            return 1.0 / (1.0 + np.exp(-x))
        x = logits.float()
        return x.softmax(dim=-1) if self.exclusive else x.sigmoid()

    def decide(self, scores: Any, thresholds: Any = None) -> Any:
        """Bool ``[N, C]`` decisions from probabilities (numpy or torch, returned in kind).

        Multi-label: ``score > threshold`` (strict, as torchmetrics), 0.5 for every label when ``thresholds`` is
        None, else ``thresholds.apply`` (per-label cut-offs and the optional at-least-one rule). Multi-class: the
        one-hot arg-max; ``thresholds`` must be None there.
        """
        if self.exclusive:
            if thresholds is not None:
                raise ConfigError("decision thresholds apply to multi-label models only; this one is multi-class")
            if isinstance(scores, np.ndarray):
                decisions = np.zeros(scores.shape, dtype=bool)
                decisions[np.arange(len(scores)), scores.argmax(axis=1)] = True
                return decisions
            from torch.nn.functional import one_hot

            return one_hot(scores.argmax(dim=-1), self.num_labels).bool()
        if thresholds is None:
            return scores > 0.5
        return thresholds.apply(np.asarray(scores))

    def macro(self, values: np.ndarray, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
        """Macro average over the last axis of per-label ``values``: over every label (multi-label, so a label
        without positives counts as 0) or over the classes present in the targets or decisions (multi-class:
        scikit-learn's default label set, torchmetrics' rule)."""
        values = np.asarray(values, dtype=np.float64)
        if not self.exclusive:
            return values.mean(-1)
        present = (np.asarray(tp) + np.asarray(fp) + np.asarray(fn)) > 0
        return (values * present).sum(-1) / np.maximum(present.sum(-1), 1)

    def headline_names(self) -> dict[str, str]:
        """Extra names for headline metrics: multi-class calls exact match what it is, accuracy."""
        return {"accuracy": "exact_match"} if self.exclusive else {}

    # ---------------------------------------------------------------- compatibility

    def check_loss(self, loss: Any) -> None:
        if self.task not in loss.tasks:
            raise ConfigError(
                f"{type(loss).__name__} works for {' / '.join(loss.tasks)} data, but this dataset is {self.task}. "
                "Use loss=bce (either task) or loss=ce (multiclass)."
            )

    # ---------------------------------------------------------------- storage

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "names": list(self.names),
                "counts": None if self.counts is None else list(self.counts), "num_train": self.num_train}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> LabelSpace:
        return cls(task=stored["task"], names=tuple(stored["names"]),
                   counts=None if stored.get("counts") is None else tuple(stored["counts"]),
                   num_train=stored.get("num_train"))
