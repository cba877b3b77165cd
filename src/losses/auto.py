"""``loss=auto``: the loss the task calls for, so the default run suits any dataset without a choice to make."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from src.losses.base import Loss
from src.losses.combined import build_inner


def chosen_loss(config: Mapping[str, Any] | None, exclusive: bool) -> Mapping[str, Any] | None:
    """The loss config a run trained with: for ``loss=auto`` the nested one its task picked."""
    if isinstance(config, Mapping) and str(config.get("_target_", "")).endswith("auto.by_task"):
        return config["multiclass" if exclusive else "multilabel"]
    return config


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
