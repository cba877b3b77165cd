"""Training health: the gradient norm every step, and a guard against non-finite steps.

Asymmetric and focal losses on rare labels, fp16 and high learning rates can produce a NaN or infinite loss or
gradient; one such optimizer step writes NaN into every weight and the run trains on silently. This callback sees
the gradients after backward and before clipping and the optimizer step: it logs their global L2 norm
(``train/grad_norm``, at the trainer's ``log_every_n_steps``), and when the norm is not finite it drops the
gradients, so the optimizer skips the step and the weights stay as they were, counts it (``train/bad_steps``) and
stops the run with a clear message once more than ``max_bad_steps`` steps were skipped. Under fp16 loss scaling the
scaler already skips overflowing steps (and lowers its scale), so those are left to it.

It also warns, once, when the train macro-F1 of an epoch exceeds the validation macro-F1 by more than
``max_train_val_gap``: memorising the training rows (a 99% train / 17% val collapse) shows there epochs before the
run ends.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from src.errors import LabelwiseError

log = logging.getLogger(__name__)


class NonFiniteTraining(LabelwiseError):
    """Too many steps had a non-finite loss or gradient."""


class TrainingHealth(L.Callback):
    def __init__(self, max_bad_steps: int = 10, max_train_val_gap: float | None = 0.3):
        if not isinstance(max_bad_steps, int) or isinstance(max_bad_steps, bool) or max_bad_steps < 0:
            raise LabelwiseError(f"callbacks.training_health.max_bad_steps must be an integer >= 0, got "
                                 f"{max_bad_steps!r}")
        self.max_bad_steps = max_bad_steps
        self.max_train_val_gap = max_train_val_gap
        self.bad_steps = 0
        self.overfit_warned = False

    def check_gap(self, trainer: L.Trainer) -> None:
        """After an epoch, its train and val macro-F1 both in (the next epoch's start, or the end of training): the
        overfitting warning."""
        train, val = (trainer.callback_metrics.get(f"{split}/macro_f1") for split in ("train", "val"))
        if self.max_train_val_gap is None or self.overfit_warned or train is None or val is None:
            return
        if float(train) - float(val) > self.max_train_val_gap:
            self.overfit_warned = True
            log.warning(
                f"overfitting: after epoch {trainer.current_epoch - 1} train macro-F1 is {float(train):.3f} and "
                f"val macro-F1 {float(val):.3f} (gap above {self.max_train_val_gap}). Check train/val overlap "
                "and label noise, or regularise: fewer epochs, early stopping, more dropout "
                "(model.encoder_overrides), freezing lower layers.")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.check_gap(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check_gap(trainer)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        norm = pl_module.gradient_norm()  # clipping reuses it
        if norm is None:  # sharded strategies keep gradients inside their engine
            return
        scaled = getattr(trainer.precision_plugin, "scaler", None) is not None
        if not scaled and not torch.isfinite(norm):
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None  # the optimizer skips parameters without a gradient: this step changes nothing
            self.bad_steps += 1
            log.warning(f"step {trainer.global_step}: non-finite loss or gradient (norm {norm.item()}); step "
                        f"skipped ({self.bad_steps} so far, at most {self.max_bad_steps})")
            if self.bad_steps > self.max_bad_steps:
                raise NonFiniteTraining(
                    f"{self.bad_steps} optimizer steps had a non-finite loss or gradient (the last at step "
                    f"{trainer.global_step}); stopped. Lower optim.lr, keep trainer.gradient_clip_val on, use "
                    "trainer.precision=bf16-mixed instead of 16-mixed, or check the loss settings; "
                    "callbacks.training_health.max_bad_steps raises the limit.")
        pl_module.log_dict({"train/grad_norm": norm, "train/bad_steps": float(self.bad_steps)}, on_step=True,
                           on_epoch=False)

    def state_dict(self) -> dict:
        return {"bad_steps": self.bad_steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.bad_steps = int(state_dict.get("bad_steps", 0))
