"""Softmax cross-entropy for multi-class targets, with optional class weights and label smoothing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from src.losses.base import Loss, auto_or_given, check_label_smoothing, require_counts


class CrossEntropy(Loss):
    """Targets are one-hot rows (their arg-max is the class). ``class_weights="auto"`` gives each class
    total / (C * count_c), the inverse-frequency weighting
    scikit-learn calls "balanced"; a class absent from training gets the largest finite weight."""

    tasks = ("multiclass",)

    def __init__(
        self,
        class_weights: str | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        label_counts: Sequence[int] | None = None,
    ):
        super().__init__()

        def balanced():
            counts = require_counts(label_counts, "loss.class_weights")
            return counts.sum() / (len(counts) * counts.clip(min=1))

        self.register_buffer("class_weights", auto_or_given(class_weights, balanced, "loss.class_weights"))
        self.label_smoothing = check_label_smoothing(label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits.float(), targets.argmax(dim=-1), weight=self.class_weights, label_smoothing=self.label_smoothing
        )
