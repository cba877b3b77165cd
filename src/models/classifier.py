"""The LightningModule: a pretrained encoder, a pooling step and a linear head, trained with any loss."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from src.errors import ConfigError
from src.losses.base import Loss
from src.metrics.classification import build_metrics, scores
from src.models.fast_dropout import use_fast_dropout
from src.models.modeling_labelwise import pool, pooled_width  # one definition, shared with the HF export
from src.models.pretrained import load_encoder

POOLINGS = ("mean", "cls", "cls_mean", "pooler")


class TextClassifier(L.LightningModule):
    """Encoder + pooling + dropout + linear head for multi-label or multi-class classification.

    ``loss``, ``optimizer`` and ``scheduler`` are optional so a trained model can be loaded for inference
    without them; ``pretrained=False`` skips loading encoder weights that a checkpoint will replace anyway.
    ``fast_dropout`` draws CPU dropout masks the cheap way (src/models/fast_dropout.py); false keeps torch's.
    """

    def __init__(
        self,
        name_or_path: str,
        num_labels: int,
        task: str,
        label_names: list[str],
        loss: Loss | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., dict] | None = None,
        pooling: str = "mean",
        dropout: float = 0.1,
        pretrained: bool = True,
        fast_dropout: bool = True,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        if not isinstance(fast_dropout, bool):
            raise ConfigError(f"model.fast_dropout is true or false, got {fast_dropout!r}")
        self.save_hyperparameters(ignore=["loss", "optimizer", "scheduler", "pretrained"], logger=False)
        # from_pretrained returns eval mode and Lightning keeps submodule modes: without this, no dropout.
        self.encoder = load_encoder(name_or_path, pretrained=pretrained).train()
        if pooling != "pooler" and getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # unused weights would break DDP and cost a matmul per batch
        width = pooled_width(self.encoder.config.hidden_size, pooling)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_labels))
        if fast_dropout:
            use_fast_dropout(self)
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # keyed "train_" etc.: a ModuleDict key may not shadow nn.Module.train
        self.metrics = nn.ModuleDict(
            {f"{split}_": build_metrics(task, num_labels) for split in ("train", "val", "test")}
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_labels]``."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = pool(
            out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None), self.hparams.pooling
        )
        return self.head(pooled)

    def logits(self, batch: dict) -> torch.Tensor:
        """Logits of a training/validation/test batch; a subclass fed other inputs (LinearProbe) overrides it."""
        return self(batch["input_ids"], batch["attention_mask"])

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        logits = self.logits(batch)
        targets = batch["labels"]
        loss = self.loss(logits, targets)
        metrics = self.metrics[f"{split}_"]
        metrics.update(scores(logits.detach(), self.hparams.task), targets.long())
        size = len(targets)
        self.log(
            f"{split}/loss",
            loss,
            on_step=split == "train",
            on_epoch=True,
            batch_size=size,
            prog_bar=True,
            sync_dist=split != "train",
        )
        self.log_dict(
            {f"{split}/{k}": v for k, v in metrics.items()},
            on_epoch=True,
            batch_size=size,
            prog_bar=split == "val",
        )
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def _grad_scaler(self):
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def configure_optimizers(self):
        # fp16 loss scaling: Lightning must unscale before clipping, which a fused optimizer does not allow
        optimizer = self.optimizer_factory(encoder=self.encoder, head=self.head, fused=self._grad_scaler() is None)
        if self.scheduler_factory is None:
            return optimizer
        total_steps = int(self.trainer.estimated_stepping_batches)
        return {
            "optimizer": optimizer,
            "lr_scheduler": self.scheduler_factory(optimizer, total_steps=total_steps),
        }

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Without a grad scaler (fp32, bf16) gradients are already real-valued: clip them directly, which
        Lightning's mixed-precision plugin refuses to do for fused optimizers. Under fp16 Lightning unscales
        first, then clips (never clip scaled gradients)."""
        if not gradient_clip_val or self._grad_scaler() is not None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
        else:
            clip_grad_norm(self.parameters(), gradient_clip_val)


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """``clip_grad_norm_`` that skips the rescaling pass when the norm is already within ``max_norm``.

    torch always multiplies by ``min(1, max_norm / norm)`` to avoid a host sync; on CPU there is nothing to
    sync, and most fine-tuning steps are not clipped, so checking first saves a pass over every gradient.
    """
    parameters = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    if norm.device.type != "cpu" or norm > max_norm:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm

