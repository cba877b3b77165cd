"""After training: score val/test with the best weights, calibrate thresholds on val, report both splits.

Thresholds tuned on the validation rows inflate validation metrics, so val also gets a cross-fitted estimate
(tune on one half, score the other, swap). Test metrics are given at 0.5 and at the tuned thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.data.datamodule import TextDataModule
from src.metrics.report import bootstrap_ci, full_metrics, write_report
from src.metrics.thresholds import Thresholds, calibrate, cross_fitted_macro_f1, decide

HEADLINE = ("macro_f1", "micro_f1")


def split_scores(model, datamodule: TextDataModule, split: str, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and targets (multi-hot, or class ids) of one split."""
    targets = datamodule.data.splits[split].targets(datamodule.task, datamodule.num_labels)
    return datamodule.score_split(model, split, precision), targets


def evaluate(model, datamodule: TextDataModule, splits: list[str], precision: str,
             calibration: dict[str, Any] | None, report_dir: Path | None,
             history: dict[str, list[tuple[float, float]]] | None = None) -> dict[str, Any]:
    """``{"thresholds": dict | None, "metrics": {"val": {...}, "test": {...}}}`` with, per split, the metrics at
    0.5 (``macro_f1``...) and at the tuned thresholds (``macro_f1_tuned``...), and the report files written
    (training curves from ``history`` beside the val report)."""
    task, names = datamodule.task, datamodule.label_names
    scored = {split: split_scores(model, datamodule, split, precision) for split in splits}
    thresholds: Thresholds | None = None
    if task == "multilabel" and calibration is not None:
        thresholds = calibrate(*scored["val"], **calibration)

    metrics = {
        split: split_metrics(scores, targets, task, names, thresholds, calibration if split == "val" else None,
                             report_dir / split if report_dir else None, history if split == "val" else None)
        for split, (scores, targets) in scored.items()
    }
    if report_dir is not None:
        for split, (scores, targets) in scored.items():
            save_predictions(report_dir / f"predictions_{split}.npz", scores, targets, task, thresholds)
    return {"thresholds": thresholds.to_dict() if thresholds else None, "metrics": metrics}


def save_predictions(path: Path, scores: np.ndarray, targets: np.ndarray, task: str,
                     thresholds: Thresholds | None) -> None:
    """Per-example scores, targets and final decisions (0/1 rows, or class ids): what ``src.compare``'s paired
    bootstrap between runs resamples."""
    decisions = decide(scores, thresholds, task)
    predictions = decisions.argmax(axis=1) if task == "multiclass" else decisions.astype(np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, scores=scores.astype(np.float32), targets=targets, predictions=predictions)


def split_metrics(scores: np.ndarray, targets: np.ndarray, task: str, names: list[str],
                  thresholds: Thresholds | None, crossfit: dict[str, Any] | None = None,
                  report_dir: Path | None = None, history: dict | None = None) -> dict[str, Any]:
    """Headline metrics at 0.5 (``macro_f1``...) and, given thresholds, at them (``macro_f1_tuned``...); a 95%
    bootstrap interval of macro-F1 under the final rule; with ``crossfit`` (calibration options) the cross-fitted
    tuned macro-F1. Writes the per-label report for the final rule into ``report_dir``."""
    at_half = full_metrics(scores, targets, task, names)
    row = {key: value for key, value in at_half.items() if isinstance(value, float)}
    final = at_half
    if thresholds is not None:
        final = full_metrics(scores, targets, task, names, thresholds)
        row.update({f"{key}_tuned": final[key] for key in HEADLINE})
    row["macro_f1_ci95"] = list(bootstrap_ci(scores, targets, task, "macro_f1", thresholds))
    if crossfit is not None and thresholds is not None:
        row["macro_f1_tuned_crossfit"] = cross_fitted_macro_f1(scores, targets, **crossfit)
    if report_dir is not None:
        write_report(report_dir, final, scores, targets, task, names, history)
    return row
