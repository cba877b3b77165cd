"""Binary cross-entropy for multi-label targets, with optional per-label positive weights and label weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from src.losses.base import Loss, auto_or_given, check_label_smoothing, given_weights, require_counts, smooth_binary


class BinaryCrossEntropy(Loss):
    """Mean BCE over labels and examples; on multi-class data it is one-vs-rest over the one-hot targets.

    ``pos_weight="auto"`` weights each label's positives by negatives/positives in the training split,
    clipped to ``max_pos_weight`` (a label with 77 positives in 43k would otherwise get ~560).
    ``weight`` (one number per label) scales each label's whole column, positives and negatives, before the
    mean over B x C; ClassBalancedLoss sets it. ``label_smoothing`` eps trains towards ``y (1 - eps) + eps / 2``.
    """

    tasks = ("multilabel", "multiclass")

    def __init__(
        self,
        pos_weight: str | Sequence[float] | None = None,
        max_pos_weight: float = 30.0,
        label_counts: Sequence[int] | None = None,
        num_examples: int | None = None,
        weight: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.label_smoothing = check_label_smoothing(label_smoothing)

        def from_counts():
            counts = require_counts(label_counts, "loss.pos_weight")
            return ((num_examples - counts) / counts.clip(min=1)).clip(1.0, max_pos_weight)

        self.register_buffer("pos_weight", auto_or_given(pos_weight, from_counts, "loss.pos_weight"))
        self.register_buffer("weight", given_weights(weight, "loss.weight"))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = smooth_binary(targets.float(), self.label_smoothing)
        return F.binary_cross_entropy_with_logits(logits.float(), y, weight=self.weight, pos_weight=self.pos_weight)
