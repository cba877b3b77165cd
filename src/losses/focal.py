"""Focal loss: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017 (arXiv:1708.02002)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from src.errors import ConfigError
from src.losses.base import Loss, check_label_smoothing, given_weights, smooth_binary


class FocalLoss(Loss):
    """``-alpha_t * (1 - p_t)^gamma * log(p_t)``.

    * Multi-label: sigmoid form per element, mean over B x C. ``p_t`` is p for a positive and 1 - p for a
      negative; ``alpha_t`` is ``alpha`` for positives and ``1 - alpha`` for negatives. Written as torchvision's
      ``sigmoid_focal_loss`` (BCE times ``(1 - p_t)^gamma``), so soft targets work too.
    * Multi-class (``exclusive``, a data fact build_loss passes; one-hot targets): softmax form with
      ``p_t = softmax(x)[y]`` and a scalar ``alpha``, mean over B.

    ``alpha=None`` turns the alpha weighting off; gamma = 0 with alpha = None is plain BCE / cross-entropy.
    ``weight`` (one number per label or class) scales each label's column (multi-label) or each example by the
    weight of its class (multi-class: plain mean over B of ``w_y * loss``, as in Cui et al. 2019).
    ``label_smoothing`` eps (sigmoid form only) trains towards the soft targets ``y (1 - eps) + eps / 2``.
    """

    tasks = ("multilabel", "multiclass")

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.25, weight: Sequence[float] | None = None,
                 exclusive: bool = False, label_smoothing: float = 0.0):
        super().__init__()
        self.exclusive = bool(exclusive)
        self.label_smoothing = check_label_smoothing(label_smoothing)
        if self.exclusive and self.label_smoothing:
            raise ConfigError(
                "loss.label_smoothing is for focal loss's sigmoid (multi-label) form; this data is multi-class, where "
                "focal loss uses softmax. Use loss=ce loss.label_smoothing=... instead, or drop loss.label_smoothing"
            )
        if gamma < 0:
            raise ConfigError(f"loss.gamma must be >= 0, got {gamma}")
        if alpha is not None and not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"loss.alpha must be null or in [0, 1], got {alpha}")
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)
        self.register_buffer("weight", given_weights(weight, "loss.weight"))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = logits.float()
        if self.exclusive:
            return self._softmax(x, targets.argmax(dim=-1))
        return self._sigmoid(x, smooth_binary(targets.float(), self.label_smoothing))

    def _focus(self, log_one_minus_p_t: torch.Tensor) -> torch.Tensor:
        """``(1 - p_t)^gamma`` as ``exp(gamma * log(1 - p_t))``: precise for tiny 1 - p_t, finite gradient for any
        gamma (a plain power has an infinite gradient at 0 for gamma < 1)."""
        if self.gamma == 0:
            return torch.ones_like(log_one_minus_p_t)
        return torch.exp(self.gamma * log_one_minus_p_t)

    def _sigmoid(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")  # -log p_t
        # 1 - p_t = y (1 - p) + (1 - y) p, in logs (log 0 = -inf drops a term for hard targets)
        log_one_minus_p_t = torch.logaddexp(torch.log(y) + F.logsigmoid(-x), torch.log1p(-y) + F.logsigmoid(x))
        loss = self._focus(log_one_minus_p_t) * ce
        if self.alpha is not None:
            loss = (self.alpha * y + (1.0 - self.alpha) * (1.0 - y)) * loss
        if self.weight is not None:
            loss = loss * self.weight
        return loss.mean()

    def _softmax(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # p_t = 1 / (1 + e^m) with m = logsumexp over the other classes - x_y, so log p_t = logsigmoid(-m) and
        # log(1 - p_t) = logsigmoid(m): both keep their precision when p_t is within 1e-7 of 1 or of 0
        is_target = F.one_hot(y, x.shape[-1]).bool()
        margin = x.masked_fill(is_target, float("-inf")).logsumexp(dim=-1) - x.gather(1, y[:, None]).squeeze(1)
        loss = -self._focus(F.logsigmoid(margin)) * F.logsigmoid(-margin)
        if self.alpha is not None:
            loss = self.alpha * loss
        if self.weight is not None:
            loss = self.weight[y] * loss
        return loss.mean()
