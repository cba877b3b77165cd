"""Asymmetric loss (ASL) for multi-label data: Ridnik et al., "Asymmetric Loss For Multi-Label Classification",
ICCV 2021 (arXiv:2009.14119)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from src.errors import ConfigError
from src.losses.base import Loss, check_label_smoothing, given_weights, smooth_binary


class AsymmetricLoss(Loss):
    """``-mean(y * L+ + (1 - y) * L-)`` over B x C, with p = sigmoid(x) and

    * positives: ``L+ = (1 - p)^gamma_pos * log(p)``
    * negatives: ``L- = p_m^gamma_neg * log(1 - p_m)`` with the shifted probability ``p_m = max(p - clip, 0)``

    The probability margin ``clip`` shifts negatives only: a negative with p <= clip adds nothing and gets no
    gradient (hard thresholding of easy negatives). Logs are taken as log-sigmoids, and the focusing weights as
    ``exp(gamma * log(.))``, so values and gradients stay finite for any fp32 logit (a confidently wrong positive
    at x = -30 costs 30, not the log(eps) = 18.4 that clamping p at eps would give). ``eps`` is the floor for
    ``p - clip`` inside its log. ``detach_focusing`` computes the focusing weights without gradient, as the
    paper's ``disable_torch_grad_focal_loss``. ``weight`` (one number per label) scales each label's column.
    ``label_smoothing`` eps replaces y by ``y (1 - eps) + eps / 2`` in the formula above (each element then has
    both terms). Class ids (multi-class) are taken as one-hot targets.
    """

    tasks = ("multilabel", "multiclass")

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 0.0,
        clip: float | None = 0.05,
        eps: float = 1e-8,
        detach_focusing: bool = False,
        weight: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        self.label_smoothing = check_label_smoothing(label_smoothing)
        clip = 0.0 if clip is None else float(clip)
        if not 0.0 <= clip < 1.0:
            raise ConfigError(f"loss.clip must be in [0, 1), got {clip}")
        if gamma_neg < 0 or gamma_pos < 0:
            raise ConfigError(f"loss.gamma_neg and loss.gamma_pos must be >= 0, got {gamma_neg} and {gamma_pos}")
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = clip
        self.eps = float(eps)
        self.detach_focusing = bool(detach_focusing)
        self.register_buffer("weight", given_weights(weight, "loss.weight"))

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = logits.float()
        y = smooth_binary(targets.float(), self.label_smoothing)

        log_p = F.logsigmoid(x)  # log p
        log_q = F.logsigmoid(-x)  # log (1 - p)
        if self.clip > 0:
            # p_m = max(p - clip, 0); where p <= clip, 1 - p_m clamps to 1: the term is p_m^g * log 1 = 0, and
            # the clamps pass no gradient, so easy negatives below the margin drop out exactly
            log_p_m = torch.log((torch.sigmoid(x) - self.clip).clamp(min=self.eps))
            log_one_minus_p_m = torch.log((torch.sigmoid(-x) + self.clip).clamp(max=1.0))
        else:
            log_p_m, log_one_minus_p_m = log_p, log_q

        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_focusing):
            focus_pos = torch.exp(self.gamma_pos * log_q)  # (1 - p)^gamma_pos
            focus_neg = torch.exp(self.gamma_neg * log_p_m)  # p_m^gamma_neg

        elementwise = y * focus_pos * log_p + (1.0 - y) * focus_neg * log_one_minus_p_m
        if self.weight is not None:
            elementwise = elementwise * self.weight
        return -elementwise.mean()
