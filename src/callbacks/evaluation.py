"""Evaluation inside Lightning's own validation and test loops: one scoring pass per split.

Validation and test steps emit probabilities, 0/1 targets and row indices. At the end of each loop this callback
gathers them (all ranks under DDP, each row once, in row order) and:

- **during fit**, every epoch: with ``calibration=temperature`` first fits the temperature that makes these scores
  calibrated (lowest validation NLL); tunes the decision thresholds on these validation scores and puts them into the
  model's config, so the checkpoint Lightning saves next holds the thresholds tuned for exactly its weights (nothing is
  rewritten afterwards); logs macro/micro-F1 at 0.5 and at the tuned thresholds, and the macro-F1 of the head,
  medium and tail labels by training frequency at the model's decision rule, any of which checkpointing, early
  stopping and sweeps can monitor (``optimized_metric=val/tail_macro_f1``);
- **in ``trainer.validate`` / ``trainer.test``** (the best checkpoint after fit, or ``src.eval``): computes the full
  evaluation with the model's stored thresholds: every metric at 0.5 and tuned, the cross-fitted tuned macro-F1 (val:
  thresholds tuned on the rows they score flatter them), a bootstrap interval, the per-label report, figures and
  per-example predictions; logs the numbers and the files through the trainer's loggers and keeps them in
  :attr:`Evaluation.results` for the run summary.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn

from src.io import atomic_path
from src.labels import LabelSpace
from src.metrics.calibration import fit_temperature
from src.metrics.classification import bucket_macro_f1, decision_metrics, full_metrics
from src.metrics.report import write_report
from src.metrics.statistics import bootstrap_ci
from src.metrics.thresholds import Thresholds, calibrate, cross_fitted_macro_f1
from src.tracking.publish import publish_files

log = logging.getLogger(__name__)
HEADLINE = ("macro_f1", "micro_f1")


class Evaluation(L.Callback):
    """``thresholds``: threshold options (:func:`src.metrics.thresholds.calibrate`'s keywords) or None to keep
    0.5; ``temperature``: None, or ``{"per_label": bool}`` to fit a temperature each epoch (``calibration=
    temperature``); ``report_dir``: where the full evaluation writes ``<split>/`` reports and
    ``predictions_<split>.npz`` (None: numbers only)."""

    def __init__(self, thresholds: dict[str, Any] | None = None, report_dir: str | Path | None = None,
                 bootstrap_resamples: int = 1000, temperature: dict[str, Any] | None = None):
        self.calibration = dict(thresholds) if thresholds is not None else None
        self.temperature = dict(temperature) if temperature is not None else None
        self.report_dir = Path(report_dir) if report_dir else None
        self.bootstrap_resamples = bootstrap_resamples
        self.results: dict[str, dict[str, Any]] = {}
        self._outputs: list[dict[str, np.ndarray]] = []

    # ---------------------------------------------------------------- collecting

    def _start(self, *args) -> None:
        self._outputs = []

    on_validation_epoch_start = on_test_epoch_start = _start

    def _collect(self, trainer, pl_module, outputs, *args) -> None:
        self._outputs.append({key: value.detach().float().cpu().numpy() for key, value in outputs.items()})

    on_validation_batch_end = on_test_batch_end = _collect

    def gather(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Logits, scores and targets of every row of the split, in row order: each rank's rows gathered (a row
        that two ranks scored counts once); None when no rank scored any. Every rank must call it under DDP."""
        keys = ("index", "logits", "scores", "targets")
        parts = [[o[key] for o in self._outputs] for key in keys]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, parts)
            parts = [[array for rank in gathered for array in rank[i]] for i in range(len(keys))]
        if not parts[0]:
            return None
        index, logits, scores, targets = (np.concatenate(part) for part in parts)
        _, first = np.unique(index.astype(np.int64), return_index=True)  # sorted by row, duplicates dropped
        return logits[first], scores[first], targets[first]

    # ---------------------------------------------------------------- the loop ends

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        gathered = None if trainer.sanity_checking else self.gather()
        if gathered is None:
            return
        logits, scores, targets = gathered
        if trainer.state.fn == TrainerFn.FITTING:
            if self.temperature is not None:
                scores = self.fit_temperature(pl_module, logits, targets)
            self.tune_and_log(pl_module, scores, targets)
        else:
            self.evaluate(trainer, pl_module, "val", scores, targets)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        gathered = self.gather()
        if gathered is not None:
            self.evaluate(trainer, pl_module, pl_module.test_prefix, *gathered[1:])

    def fit_temperature(self, pl_module, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Temperatures fitted on this epoch's validation logits into the model config; the calibrated scores.
        The logits were already divided by the temperature stored before (eval mode), so the fitted factor
        multiplies it."""
        space: LabelSpace = pl_module.labels
        factor = fit_temperature(logits, targets, space.exclusive, per_label=self.temperature.get("per_label", True))
        before = pl_module.net.config.temperature
        pl_module.net.config.temperature = (factor * (np.asarray(before) if before is not None else 1.0)).tolist()
        pl_module.log_dict({"val/temperature_mean": float(np.mean(pl_module.net.config.temperature))},
                           sync_dist=True)
        return space.scores(logits / factor)

    def tune_and_log(self, pl_module, scores: np.ndarray, targets: np.ndarray) -> None:
        """An epoch of fit: thresholds tuned on these scores into the model config; headline numbers logged."""
        space: LabelSpace = pl_module.labels
        truth = targets.astype(bool)
        thresholds = None
        if space.thresholded and self.calibration is not None:
            thresholds = calibrate(scores, truth, **self.calibration)
        pl_module.net.config.thresholds = thresholds.to_dict() if thresholds else None
        metrics = decision_metrics(space, truth, space.decide(scores))
        logged = {f"val/{name}": metrics[name] for name in (*HEADLINE, *space.headline_names())}
        if thresholds is not None:
            tuned = decision_metrics(space, truth, space.decide(scores, thresholds))
            logged.update({f"val/{name}_tuned": tuned[name] for name in HEADLINE})
        pl_module.log_dict(logged, prog_bar=True, sync_dist=True)  # equal on every rank: keeps Lightning quiet
        buckets = bucket_macro_f1(space, truth, space.decide(scores, thresholds))
        pl_module.log_dict({f"val/{name}": value for name, value in buckets.items()}, sync_dist=True)

    def evaluate(self, trainer: L.Trainer, pl_module, split: str, scores: np.ndarray, targets: np.ndarray) -> None:
        """The full evaluation of one split with the model's stored thresholds."""
        space: LabelSpace = pl_module.labels
        stored = pl_module.net.config.thresholds
        thresholds = Thresholds.from_dict(stored) if stored else None
        row, final = self.split_metrics(space, scores, targets, thresholds, crossfit=split == "val")
        pl_module.log_dict({f"{split}/{name}": value for name, value in row.items() if isinstance(value, float)},
                           sync_dist=True)
        self.results[split] = row
        if self.report_dir is not None and trainer.is_global_zero:
            directory = self.report_dir / split
            write_report(directory, space, final, scores, targets, thresholds)
            save_predictions(self.report_dir / f"predictions_{split}.npz", space, scores, targets, thresholds)
            publish_files(trainer.loggers, directory, f"report/{split}")
            publish_files(trainer.loggers, self.report_dir / f"predictions_{split}.npz", "report")

    def split_metrics(self, space: LabelSpace, scores: np.ndarray, targets: np.ndarray,
                      thresholds: Thresholds | None, crossfit: bool) -> tuple[dict[str, Any], dict]:
        """The summary row (metrics at 0.5, ``*_tuned`` at the thresholds, ``<bucket>_macro_f1`` and
        ``macro_f1_ci95`` of the final rule and, with ``crossfit``, ``macro_f1_tuned_crossfit``) and the full metrics
        of the final rule (for the report)."""
        at_half = full_metrics(space, scores, targets)
        row: dict[str, Any] = {key: value for key, value in at_half.items() if isinstance(value, float)}
        final = at_half
        if thresholds is not None:
            final = full_metrics(space, scores, targets, thresholds)
            row.update({f"{key}_tuned": final[key] for key in HEADLINE})
        truth = targets.astype(bool)
        row.update(bucket_macro_f1(space, truth, space.decide(scores, thresholds)))
        row["macro_f1_ci95"] = list(bootstrap_ci(space, truth, space.decide(scores, thresholds),
                                                 n=self.bootstrap_resamples))
        if crossfit and thresholds is not None and self.calibration is not None and len(scores) >= 2:
            row["macro_f1_tuned_crossfit"] = cross_fitted_macro_f1(scores, truth, **self.calibration)
        return row, final


def save_predictions(path: Path, space: LabelSpace, scores: np.ndarray, targets: np.ndarray,
                     thresholds: Thresholds | None) -> None:
    """Per-example scores, 0/1 targets and final decisions, with the label space: what ``src.compare``'s paired
    bootstrap between runs resamples."""
    with atomic_path(path) as temporary:
        np.savez_compressed(temporary, scores=scores.astype(np.float32), targets=targets.astype(np.int8),
                            predictions=space.decide(scores, thresholds).astype(np.int8),
                            labels=np.array(json.dumps(space.to_dict())))
