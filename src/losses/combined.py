"""A convex combination of two losses, e.g. BCE + asymmetric."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from src.errors import ConfigError
from src.losses.base import Loss, call_with_facts


def build_inner(factory: Callable[..., Loss] | Loss, **facts) -> Loss:
    """A loss from a partial (given the data facts it asks for), or an already built loss as it is."""
    if isinstance(factory, nn.Module):
        return factory
    return call_with_facts(factory, **facts)


class CombinedLoss(Loss):
    """``ratio * first + (1 - ratio) * second``; ``first`` and ``second`` are loss partials (nested Hydra
    configs with ``_partial_: true``). The training data facts reach the inner losses that ask for them, so
    e.g. ``loss.first.pos_weight=auto`` works. It supports the tasks both inner losses support."""

    def __init__(
        self,
        first: Callable[..., Loss] | Loss,
        second: Callable[..., Loss] | Loss,
        ratio: float = 0.7,
        label_counts: Sequence[int] | None = None,
        num_examples: int | None = None,
        exclusive: bool = False,
    ):
        super().__init__()
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError(f"loss.ratio must be in [0, 1], got {ratio}")
        facts = {"label_counts": label_counts, "num_examples": num_examples, "exclusive": exclusive}
        self.first = build_inner(first, **facts)
        self.second = build_inner(second, **facts)
        self.ratio = float(ratio)
        self.tasks = tuple(task for task in self.first.tasks if task in self.second.tasks)
        if not self.tasks:
            raise ConfigError(
                f"loss.first ({type(self.first).__name__}: {'/'.join(self.first.tasks)}) and loss.second "
                f"({type(self.second).__name__}: {'/'.join(self.second.tasks)}) share no task"
            )

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.ratio == 1.0:  # a zero-weighted term is skipped, not multiplied by 0 (0 * inf would be nan)
            return self.first(logits, targets)
        if self.ratio == 0.0:
            return self.second(logits, targets)
        return self.ratio * self.first(logits, targets) + (1.0 - self.ratio) * self.second(logits, targets)
