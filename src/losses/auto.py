"""``loss=auto``: the loss the task calls for, so the default run suits any dataset without a choice to make."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from src.losses.base import Loss
from src.losses.combined import build_inner


def by_task(
    multilabel: Callable[..., Loss],
    multiclass: Callable[..., Loss],
    label_counts: Sequence[int] | None = None,
    num_examples: int | None = None,
    exclusive: bool = False,
) -> Loss:
    """``multiclass`` (cross-entropy in conf/loss/auto.yaml) when the classes are exclusive, ``multilabel``
    (asymmetric) otherwise; each a loss partial given the data facts it asks for (docs/goemotions.md has the
    ablations behind the choice)."""
    return build_inner(multiclass if exclusive else multilabel, label_counts=label_counts, num_examples=num_examples,
                       exclusive=exclusive)
