"""Training curves from the run's own records (not read back from a tracker), so every logger, CSV and TensorBoard
included, gets the same figure; the history lives in the checkpoint, so a resumed run keeps its start."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from src.metrics.plots import training_curves
from src.tracking.publish import publish_files

#: What is recorded: per logging step, per training epoch, per validation during fit.
STEP_CURVES = ("train/loss_step",)
EPOCH_CURVES = ("train/loss_epoch", "train/macro_f1")
VALIDATION_CURVES = ("val/loss", "val/macro_f1", "val/macro_f1_tuned")


class TrainingCurves(L.Callback):
    """Records the curves as ``{name: [(step, value), ...]}`` and draws ``path`` when fit ends, marking the step of
    the best checkpoint."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.history: dict[str, list[tuple[int, float]]] = {}

    def _record(self, trainer: L.Trainer, names: tuple[str, ...]) -> None:
        for name in names:
            value = trainer.callback_metrics.get(name)
            if value is not None and math.isfinite(float(value)):
                self.history.setdefault(name, []).append((trainer.global_step, float(value)))

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step % trainer.log_every_n_steps == 0:
            self._record(trainer, STEP_CURVES)

    def on_train_epoch_end(self, trainer: L.Trainer, *args) -> None:
        self._record(trainer, EPOCH_CURVES)

    def on_validation_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._record(trainer, VALIDATION_CURVES)

    def on_fit_end(self, trainer: L.Trainer, *args) -> None:
        if self.path is None or not self.history or not trainer.is_global_zero:
            return
        training_curves(self.path, self.history, marks=self.best_step(trainer))
        publish_files(trainer.loggers, self.path, "report")

    def best_step(self, trainer: L.Trainer) -> dict[str, float]:
        """``{"best checkpoint": step}`` where the monitored metric reached the checkpoint callback's best score."""
        callback = trainer.checkpoint_callback
        score = getattr(callback, "best_model_score", None)
        points = self.history.get(getattr(callback, "monitor", None) or "", [])
        hits = [step for step, value in points if score is not None and math.isclose(value, float(score),
                                                                                       rel_tol=1e-6)]
        return {"best checkpoint": hits[-1]} if hits else {}

    def state_dict(self) -> dict[str, Any]:
        return {"history": {name: [list(point) for point in points] for name, points in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {name: [tuple(point) for point in points] for name, points in state_dict["history"].items()}
