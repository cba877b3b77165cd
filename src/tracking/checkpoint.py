"""Self-contained checkpoints: the model artifact's config and weights (written by the LightningModule), the run's
config and MLflow run id (written here), saved atomically and read back with ``weights_only=True``.

A checkpoint of labelwise 0.1 (a ``TextClassifier`` with its head under ``head.1``) is converted when read, so
``src.eval``, ``src.predict`` and ``src.export`` take it as it is; it cannot be resumed.
"""

from __future__ import annotations

import pickle
import random
import time
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.strategies import DeepSpeedStrategy

from src.errors import ConfigError
from src.io import atomic_path
from src.models.module import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from src.tracking.mlflow import find_mlflow

#: The consolidated one-file checkpoint that :func:`consolidated` writes inside a DeepSpeed checkpoint directory.
CONSOLIDATED = "consolidated.ckpt"


class RunMetadata(L.Callback):
    """Adds the run's config (resolved, and unresolved for resume) and MLflow run id to every checkpoint, weights-only
    ones included: Lightning calls no callback hook for those, so the entries go through the module's own
    ``on_save_checkpoint`` (:attr:`ClassifierModule.run_metadata`)."""

    def __init__(self, config: dict[str, Any], config_unresolved: dict[str, Any]):
        self.config = config
        self.config_unresolved = config_unresolved

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        mlflow = find_mlflow(trainer.loggers)
        pl_module.run_metadata = {"config": self.config, "config_unresolved": self.config_unresolved,
                                  "mlflow_run_id": mlflow.run_id if mlflow else None}


class ResumeState(L.Callback):
    """What a resume mid-epoch needs beyond Lightning's own state, so it trains on the same batches with the same
    dropout masks as the run that was not interrupted:

    - the random number generators (torch CPU and CUDA, numpy, Python), in every full checkpoint as plain types, put
      back at ``on_train_start``: after what a resume draws first (model init, the sanity check, the data loader
      iterator), where the saving run was;
    - the training loader's position (:class:`~src.data.batching.ResumableDataLoader`): Lightning restores it only
      when it builds the loader after loading the checkpoint, but the LR schedule's ``estimated_stepping_batches``
      builds it before, so it is restored here (before the first batch is drawn).
    """

    def __init__(self):
        self._loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
                "python": random.getstate()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.fit_loop._load_combined_loader_states()  # a no-op when Lightning did it (or there is nothing to load)
        state, self._loaded = self._loaded, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


class EpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with two changes:

    - ``save_last`` keeps its promise: since Lightning 2.6 ``last.ckpt`` is written only at a step where a top-k
      checkpoint was saved, so once the monitored metric stops improving it stays a copy of the best, and a resume
      from it would repeat every epoch after the best. This also writes it at each evaluation where the top-k did not
      change.
    - ``save_weights_only="best"`` (besides true and false): the top-k checkpoints hold the weights only (what eval,
      predict and export read; about a third of the size with AdamW's two moments) and ``last.ckpt`` the full state
      (what a resume reads). Lightning's switch is one for both, so a run kept two full optimizer states. Under
      DeepSpeed the engine writes its optimizer partitions into every checkpoint directory anyway, so there the best
      stays a full checkpoint, as before.
    """

    def __init__(self, *args: Any, save_weights_only: bool | str = False, **kwargs: Any):
        self.best_weights_only = save_weights_only == "best"  # with save_last=link: refused by src.schema
        super().__init__(*args, save_weights_only=save_weights_only is True, **kwargs)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        configured = self.save_weights_only  # _save_last_checkpoint sets last_model_path before it saves
        self.save_weights_only = configured or (self.best_weights_only and filepath != self.last_model_path
                                                and not isinstance(trainer.strategy, DeepSpeedStrategy))
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self.save_weights_only = configured

    def _save_last_if_missed(self, trainer: L.Trainer, skipped: bool) -> None:
        if self.save_last and not skipped and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        skipped = self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        self._save_last_if_missed(trainer, skipped)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        skipped = self._should_skip_saving_checkpoint(trainer) or not self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_missed(trainer, skipped)


class PeriodicCheckpoint(ModelCheckpoint):
    """A full checkpoint (``periodic.ckpt``, overwritten) once ``train_time_interval`` (``HH:MM:SS`` or seconds) of
    training passed without any checkpoint, so a kill in a long epoch loses at most that much; resuming from it
    continues from the same batch. The clock restarts at every epoch end (when the epoch's checkpoints are written), so
    epochs shorter than the interval never write it; it is removed when fit ends (the epoch checkpoints supersede
    it)."""

    def __init__(self, dirpath: str, train_time_interval: str | float = "00:30:00", filename: str = "periodic"):
        super().__init__(dirpath=dirpath, filename=filename, monitor=None, save_top_k=1, save_last=False,
                         enable_version_counter=False, train_time_interval=parse_interval(train_time_interval))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        self._last_time_checked = time.monotonic()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.best_model_path:
            Path(self.best_model_path).unlink(missing_ok=True)
        self.best_model_path = ""


def parse_interval(value: str | float) -> timedelta:
    """``"00:30:00"`` or ``1800`` (seconds) as a timedelta; a ConfigError naming the key otherwise."""
    try:
        if isinstance(value, str) and ":" in value:
            hours, minutes, seconds = (float(part) for part in value.split(":"))
            interval = timedelta(hours=hours, minutes=minutes, seconds=seconds)
        else:
            interval = timedelta(seconds=float(value))
    except ValueError:
        interval = None
    if interval is None or interval.total_seconds() < 0:
        raise ConfigError(f"callbacks.periodic_checkpoint.train_time_interval={value!r}: give HH:MM:SS or seconds "
                          "(>= 0); callbacks.periodic_checkpoint=null switches it off.")
    return interval


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
