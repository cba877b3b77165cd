"""Optimizer and learning-rate schedule factories (Hydra partials completed by the LightningModule)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import get_scheduler


def adamw(
    *,
    encoder: nn.Module,
    head: nn.Module,
    lr: float,
    weight_decay: float = 0.01,
    head_lr_multiplier: float = 1.0,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW with no weight decay on biases and normalisation weights (every 1-D parameter), and the
    freshly initialised head at ``lr * head_lr_multiplier``; the fused implementation unless ``fused=False``
    (needed under fp16 loss scaling, where gradients must be unscaled before clipping)."""
    groups = []
    for module, group_lr in ((encoder, lr), (head, lr * head_lr_multiplier)):
        params = [p for p in module.parameters() if p.requires_grad]
        groups.append(
            {"params": [p for p in params if p.ndim >= 2], "lr": group_lr, "weight_decay": weight_decay}
        )
        groups.append({"params": [p for p in params if p.ndim < 2], "lr": group_lr, "weight_decay": 0.0})
    groups = [group for group in groups if group["params"]]
    # the fused kernel (CPU and CUDA) is ~6x faster than foreach on CPU: 17 vs 106 ms a step for MiniLM
    fused = fused and all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None)


def warmup_schedule(
    optimizer: torch.optim.Optimizer, *, total_steps: int, name: str = "linear", warmup_ratio: float = 0.1
) -> dict:
    """A transformers schedule (``linear``, ``cosine``, ...) with ``warmup_ratio`` of the optimizer steps as
    warm-up, stepped once per optimizer step."""
    scheduler = get_scheduler(
        name, optimizer, num_warmup_steps=round(warmup_ratio * total_steps), num_training_steps=total_steps
    )
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}
