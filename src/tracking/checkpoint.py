"""Self-contained checkpoints: the model artifact's config and weights (written by the LightningModule), the run's
config and MLflow run id (written here), saved atomically and read back with ``weights_only=True``.

A checkpoint of labelwise 0.1 (a ``TextClassifier`` with its head under ``head.1``) is converted when read, so
``src.eval``, ``src.predict`` and ``src.export`` take it as it is; it cannot be resumed.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.errors import ConfigError
from src.io import atomic_path
from src.models.module import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from src.tracking.mlflow import find_mlflow

#: The consolidated one-file checkpoint that :func:`consolidated` writes inside a DeepSpeed checkpoint directory.
CONSOLIDATED = "consolidated.ckpt"


class RunMetadata(L.Callback):
    """Adds the run's config (resolved, and unresolved for resume) and MLflow run id to every checkpoint."""

    def __init__(self, config: dict[str, Any], config_unresolved: dict[str, Any]):
        self.config = config
        self.config_unresolved = config_unresolved

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        mlflow = find_mlflow(trainer.loggers)
        checkpoint.setdefault(CHECKPOINT_KEY, {}).update(
            config=self.config, config_unresolved=self.config_unresolved,
            mlflow_run_id=mlflow.run_id if mlflow else None)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writes, under a temporary name beside the file and renamed when complete (Lightning's
    own local write goes through a temporary file in the system temp dir, which is a copy, not a rename, when that
    is another file system)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A labelwise checkpoint (tensors memory-mapped, ``weights_only``), converted from the 0.1 layout if needed; one
    clear ConfigError for a wrong path, a truncated or corrupt file, or a foreign one. A DeepSpeed checkpoint
    directory is read through its consolidated file (:func:`consolidated`)."""
    path = Path(path).expanduser()
    if is_deepspeed_checkpoint(path):
        path = consolidated(path)
    if not path.is_file():
        what = "a directory, not a checkpoint file" if path.is_dir() else "no such file"
        raise ConfigError(f"ckpt_path={path}: {what}. Pass the path of a .ckpt file "
                          "(e.g. <run dir>/checkpoints/last.ckpt).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"ckpt_path={path}: cannot be read as a checkpoint ({reason}); the file is truncated, "
                          "corrupt or not a PyTorch checkpoint. Use another checkpoint of the run "
                          "(checkpoints/last.ckpt or best-*.ckpt).") from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise ConfigError(f"ckpt_path={path}: not a labelwise checkpoint (no '{CHECKPOINT_KEY}' entry).")
    if "format" not in checkpoint[CHECKPOINT_KEY]:
        checkpoint = from_first_layout(checkpoint)
    return checkpoint


def is_deepspeed_checkpoint(path: Path) -> bool:
    """A checkpoint as Lightning's DeepSpeed strategy writes it: ``<name>.ckpt/checkpoint/*model_states.pt``."""
    return path.is_dir() and any(path.glob("*/*model_states.pt"))


def consolidated(directory: Path) -> Path:
    """The one-file checkpoint of a DeepSpeed (ZeRO) checkpoint directory: its shards gathered into fp32 weights with
    Lightning's state beside them (``lightning.pytorch.utilities.deepspeed``), written once as ``CONSOLIDATED`` inside
    the directory and reused while it is newer than the shards. Converting needs the deepspeed package."""
    target = directory / CONSOLIDATED
    newest_shard = max(shard.stat().st_mtime_ns for shard in directory.glob("*/*.pt"))
    if target.is_file() and target.stat().st_mtime_ns >= newest_shard:
        return target
    from lightning.pytorch.utilities.deepspeed import _DEEPSPEED_AVAILABLE, convert_zero_checkpoint_to_fp32_state_dict

    if not _DEEPSPEED_AVAILABLE:
        raise ConfigError(
            f"ckpt_path={directory} is a DeepSpeed checkpoint directory; reading it gathers its shards into one file, "
            "which needs deepspeed (pip install -e \".[deepspeed]\"). Where deepspeed is installed, run once: "
            "python -c \"from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict"
            f" as c; c('{directory}', '{target}')\" and pass the same ckpt_path again.")
    with atomic_path(target) as temporary:
        convert_zero_checkpoint_to_fp32_state_dict(directory, temporary)
    return target


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``labelwise`` entry of a checkpoint."""
    return read_checkpoint(path)[CHECKPOINT_KEY]


def from_first_layout(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A labelwise 0.1 checkpoint in the current layout (for inference): the model config rebuilt from the stored
    hyperparameters and the encoder's own config, the head's weights renamed, the label counts unknown."""
    from src.labels import LabelSpace
    from src.models.build import label_fields
    from src.models.modeling_labelwise import LabelwiseConfig
    from src.pretrained import load_encoder_config

    meta, hparams = checkpoint[CHECKPOINT_KEY], checkpoint["hyper_parameters"]
    hidden = int(hparams.get("hidden", 0))
    labels = LabelSpace(meta["task"], tuple(meta["label_names"]))
    config = LabelwiseConfig(
        encoder=load_encoder_config(hparams["name_or_path"]), pooling=hparams.get("pooling", "mean"),
        classifier_dropout=hparams.get("dropout", 0.1), head_hidden=hidden, thresholds=meta.get("thresholds"),
        base_model=meta["tokenizer"], max_seq_length=int(meta["config"]["data"]["max_length"]),
        **label_fields(labels),
    )
    # old head: Sequential(Dropout, Linear) or, with a hidden layer, Sequential(Dropout, Linear, GELU, Dropout, Linear)
    renamed = {"head.1.": "head.dense." if hidden else "head.out_proj.", "head.4.": "head.out_proj."}
    state = {}
    for key, value in checkpoint["state_dict"].items():
        prefix = next((old for old in renamed if key.startswith(old)), None)
        if prefix is not None:
            state["net." + renamed[prefix] + key.removeprefix(prefix)] = value
        elif key.startswith("encoder."):
            state["net." + key] = value
    upgraded = {**meta, "format": CHECKPOINT_FORMAT, "net_config": config.to_dict(), "resumable": False}
    return {**checkpoint, "state_dict": state, CHECKPOINT_KEY: upgraded}
