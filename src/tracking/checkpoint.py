"""Self-contained checkpoints: what `eval`, `predict` and resume need, stored beside the weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from src.errors import ConfigError
from src.tracking.mlflow import find_mlflow

KEY = "labelwise"


class RunMetadata(L.Callback):
    """Adds ``checkpoint["labelwise"]``: the config (resolved, and unresolved for resume), label names, task,
    tokenizer, MLflow run id and tuned thresholds (None until calibrated)."""

    def __init__(self, config: dict[str, Any], config_unresolved: dict[str, Any]):
        self.config = config
        self.config_unresolved = config_unresolved

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        mlflow = find_mlflow(trainer.loggers)
        checkpoint[KEY] = {
            "config": self.config,
            "config_unresolved": self.config_unresolved,
            "label_names": list(pl_module.hparams.label_names),
            "task": pl_module.hparams.task,
            "tokenizer": pl_module.hparams.name_or_path,
            "mlflow_run_id": mlflow.run_id if mlflow else None,
            "thresholds": None,
        }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A labelwise checkpoint (tensors memory-mapped), with a clear error for a wrong path or foreign file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={path}: no such file. Pass the path of a .ckpt file (e.g. <run dir>/checkpoints/last.ckpt)."
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    if KEY not in checkpoint:
        raise ConfigError(f"ckpt_path={path}: not a labelwise checkpoint (no '{KEY}' entry).")
    return checkpoint


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``labelwise`` entry of a checkpoint."""
    return load_checkpoint(path)[KEY]


def store_thresholds(path: str | Path, thresholds: dict[str, Any]) -> None:
    """Write tuned thresholds into a saved checkpoint (calibration runs after training saved it)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint[KEY]["thresholds"] = thresholds
    torch.save(checkpoint, path)
