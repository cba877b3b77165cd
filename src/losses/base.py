"""What every loss shares: the call signature, the task it accepts, and data-derived weights."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from src.errors import ConfigError
from src.labels import LabelSpace


class Loss(nn.Module):
    """``forward(logits [B, C], targets [B, C]) -> scalar`` with 0/1 targets (one-hot rows for multi-class, as
    :class:`~src.labels.LabelSpace` makes them). Computed in fp32 whatever the autocast dtype."""

    tasks: ClassVar[tuple[str, ...]] = ("multilabel",)


def auto_or_given(value, auto: Callable[[], np.ndarray], name: str) -> torch.Tensor | None:
    """``None`` stays None, ``"auto"`` is computed from the data, a list is taken as given."""
    if value is None:
        return None
    if value == "auto":
        return torch.as_tensor(auto(), dtype=torch.float32)
    if isinstance(value, str):
        raise ConfigError(f"{name} must be 'auto', null or a list of numbers, got {value!r}")
    return torch.as_tensor(list(value), dtype=torch.float32)


def require_counts(label_counts: Sequence[int] | None, option: str) -> np.ndarray:
    if label_counts is None:
        raise ConfigError(f"{option}=auto needs the training label counts; build the loss with build_loss()")
    return np.asarray(label_counts, dtype=np.float64)


def check_label_smoothing(value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {value}")
    return float(value)


def smooth_binary(targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """Label smoothing for sigmoid losses, each label a two-class problem: ``y (1 - eps) + eps / 2``, so a
    positive's target is 1 - eps/2 and a negative's eps/2 (softmax cross-entropy spreads eps over C classes)."""
    if label_smoothing == 0:
        return targets
    return targets * (1.0 - label_smoothing) + 0.5 * label_smoothing


def given_weights(value: Sequence[float] | None, name: str) -> torch.Tensor | None:
    """Per-label / per-class weights: ``None`` stays None, a list of numbers becomes a float32 tensor."""
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigError(f"{name} must be null or a list of numbers, got {value!r}")
    if not isinstance(value, (torch.Tensor, np.ndarray)):
        value = list(value)
    weights = torch.as_tensor(value, dtype=torch.float32).clone()
    if weights.ndim != 1:
        raise ConfigError(f"{name} must be a flat list of numbers (one per label), got shape {tuple(weights.shape)}")
    return weights


def call_with_facts(factory: Callable[..., Loss], **facts) -> Loss:
    """Call a loss factory with those data facts (``label_counts``, ``num_examples``, ``exclusive``) its signature
    names; a fact that is None is left to the factory's default. Shared by build_loss and losses that wrap others."""
    wanted = inspect.signature(factory).parameters
    return factory(**{key: value for key, value in facts.items() if key in wanted and value is not None})


def build_loss(loss_factory: Callable[..., Loss], labels: LabelSpace) -> Loss:
    """Call a loss partial with the data facts its signature asks for, and check it fits the label space."""
    counts = None if labels.counts is None else list(labels.counts)
    loss = call_with_facts(loss_factory, label_counts=counts, num_examples=labels.num_train,
                           exclusive=labels.exclusive)
    labels.check_loss(loss)
    return loss
