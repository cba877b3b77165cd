"""The metric set logged per split: macro/micro F1 for both tasks, plus accuracy for multi-class."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MultilabelF1Score,
)


def build_metrics(task: str, num_labels: int, threshold: float = 0.5) -> MetricCollection:
    """Metrics that take :func:`scores` as predictions (sigmoid probabilities or softmax probabilities)."""
    if task == "multilabel":

        def f1(average):
            return MultilabelF1Score(num_labels=num_labels, threshold=threshold, average=average, validate_args=False)

        return MetricCollection({"macro_f1": f1("macro"), "micro_f1": f1("micro")})

    def f1(average):
        return MulticlassF1Score(num_classes=num_labels, average=average, validate_args=False)

    return MetricCollection(
        {
            "macro_f1": f1("macro"),
            "micro_f1": f1("micro"),
            "accuracy": MulticlassAccuracy(num_classes=num_labels, average="micro", validate_args=False),
        }
    )


def scores(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Per-label probabilities: independent sigmoids for multi-label, a softmax for multi-class."""
    logits = logits.float()
    return logits.sigmoid() if task == "multilabel" else logits.softmax(dim=-1)
