"""Class-balanced weighting by the effective number of samples: Cui et al., "Class-Balanced Loss Based on
Effective Number of Samples", CVPR 2019 (arXiv:1901.05555)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch

from src.errors import ConfigError
from src.losses.base import Loss, call_with_facts

# the keyword through which each base loss takes per-label / per-class weights, in order of preference
WEIGHT_KEYWORDS = ("weight", "class_weights")


def class_balanced_weights(label_counts: Sequence[int], beta: float) -> np.ndarray:
    """``w_c = (1 - beta) / (1 - beta^n_c)`` (one over the effective number ``E_c = (1 - beta^n_c) / (1 - beta)``),
    normalised so that ``sum_c w_c = C``. A label never seen in training (n_c = 0) counts as seen once."""
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"loss.beta must be in [0, 1), got {beta}")
    counts = np.asarray(label_counts, dtype=np.float64).clip(min=1.0)
    weights = (1.0 - beta) / (1.0 - np.power(beta, counts))
    return weights * len(counts) / weights.sum()


class ClassBalancedLoss(Loss):
    """The ``base`` loss (a partial) built with class-balanced weights: per label for sigmoid losses (each label's
    column of the elementwise loss is scaled by ``w_c``), per target class for softmax losses. The base takes
    them through its ``weight`` argument (BCE, focal, asymmetric) or ``class_weights`` (cross-entropy), and gets
    the data facts it asks for as well. Needs the training label counts: build it with build_loss()."""

    def __init__(
        self,
        base: Callable[..., Loss],
        beta: float = 0.999,
        label_counts: Sequence[int] | None = None,
        num_examples: int | None = None,
        exclusive: bool = False,
    ):
        super().__init__()
        if label_counts is None:
            raise ConfigError("loss=class_balanced needs the training label counts; build the loss with build_loss()")
        weights = class_balanced_weights(label_counts, beta)
        parameters = inspect.signature(base).parameters
        keyword = next((name for name in WEIGHT_KEYWORDS if name in parameters), None)
        if keyword is None:
            raise ConfigError(
                f"loss.base ({getattr(base, 'func', base)!r}) takes no per-label weights "
                f"(none of {', '.join(WEIGHT_KEYWORDS)}); use bce, ce, focal or asymmetric as the base"
            )
        if getattr(base, "keywords", {}).get(keyword) is not None:
            raise ConfigError(f"loss.base.{keyword} is set, but class_balanced sets it; leave it null")
        self.weight_keyword = keyword
        self.base = call_with_facts(
            functools.partial(base, **{keyword: weights.tolist()}), label_counts=label_counts,
            num_examples=num_examples, exclusive=exclusive,
        )
        self.tasks = self.base.tasks

    @property
    def class_weights(self) -> torch.Tensor:
        """The weights the base was built with (float32, one per label / class)."""
        return getattr(self.base, self.weight_keyword)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.base(logits, targets)
