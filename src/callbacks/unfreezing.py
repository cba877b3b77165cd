"""Gradual unfreezing (ULMFiT): the encoder starts frozen and one more depth group (src/models/layers.py) thaws
from the top every ``every_n_epochs`` epochs, the embeddings last; the head trains throughout.

Only what was trainable when fitting started takes part (``model.freeze_layers`` stays frozen, LoRA adapters thaw
by layer). The optimizer is built before this callback freezes anything, so it holds every such parameter; a frozen
one has no gradient, which AdamW skips (no update, no weight decay) until it thaws. Which groups are thawed is a
function of the epoch alone, so a resumed run continues where it stopped.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies import DDPStrategy

from src.errors import ConfigError
from src.models.layers import depth_groups


class GradualUnfreezing(L.Callback):
    def __init__(self, every_n_epochs: int = 1):
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ConfigError(f"callbacks.gradual_unfreezing.every_n_epochs must be an integer >= 1, got "
                              f"{every_n_epochs!r}")
        self.every_n_epochs = every_n_epochs
        self.groups: list[list] = []  # top first: the trainable parameters of each depth group

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        strategy = trainer.strategy
        if isinstance(strategy, DDPStrategy) and not strategy._ddp_kwargs.get("find_unused_parameters"):
            raise ConfigError("callbacks.gradual_unfreezing under DDP needs trainer.strategy.find_unused_parameters="
                              "true (frozen layers get no gradient).")
        groups = depth_groups(pl_module.net.encoder, "callbacks.gradual_unfreezing")
        self.groups = [trainable for group in reversed(groups) if (trainable := [p for _, p in group
                                                                                  if p.requires_grad])]

    def thawed(self, epoch: int) -> int:
        """How many groups (from the top) train in ``epoch``."""
        return min(len(self.groups), epoch // self.every_n_epochs)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        thawed = self.thawed(trainer.current_epoch)
        for index, group in enumerate(self.groups):
            for parameter in group:
                parameter.requires_grad_(index < thawed)
