"""``tune=lr_find`` / ``tune=batch_size``: Lightning's tuner run before the real fit, its result written into the run's
config (so the checkpoints, MLflow params and a resume record the value actually used).

Both run on a throw-away trainer (no loggers, checkpoints or callbacks) that restores the weights it started from.
The learning-rate range test sweeps one learning rate over every parameter group; the suggestion becomes
``optim.lr`` and the head keeps its ``head_lr_multiplier`` on top of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.tuner import Tuner
from omegaconf import DictConfig, open_dict

from src.errors import ConfigError
from src.tracking.publish import publish_files

log = logging.getLogger(__name__)


def tuning_trainer(cfg: DictConfig, directory: Path) -> L.Trainer:
    return instantiate(cfg.trainer, logger=False, callbacks=[], enable_checkpointing=False, limit_val_batches=0,
                       enable_model_summary=False, default_root_dir=str(directory))


def tune(cfg: DictConfig, module: L.LightningModule, datamodule: L.LightningDataModule, directory: Path,
         loggers: Sequence[Logger] = ()) -> dict[str, float]:
    """Runs ``cfg.tune`` (conf/tune/) and updates ``cfg`` (``optim.lr`` or ``data.batch_size``) and ``module``;
    returns what it found, for the run's params. ``directory`` receives ``lr_find.png``, published to ``loggers``."""
    directory.mkdir(parents=True, exist_ok=True)
    trainer = tuning_trainer(cfg, directory)
    datamodule.attach(module.net, trainer.precision)
    options = cfg.tune
    if options.mode == "batch_size":
        if not torch.cuda.is_available():
            raise ConfigError("tune=batch_size finds the largest batch that fits in GPU memory, and no GPU is "
                              "available here (a CPU has no out-of-memory error to stop at). Set data.batch_size "
                              "yourself, or drop tune=.")
        found = Tuner(trainer).scale_batch_size(module, datamodule=datamodule, mode="binsearch",
                                                max_val=options.max_val)
        with open_dict(cfg):
            cfg.data.batch_size = int(found)
        log.info(f"tune=batch_size: data.batch_size={found}")
        return {"tune.batch_size": float(found)}
    finder = Tuner(trainer).lr_find(module, datamodule=datamodule, min_lr=options.min_lr, max_lr=options.max_lr,
                                    num_training=options.num_training, update_attr=False)
    suggestion = finder.suggestion() if finder is not None else None
    if suggestion is None:
        raise ConfigError("tune=lr_find: the range test found no learning rate (the loss never fell; too few "
                          "training batches?). Set optim.lr yourself, or give it more data.")
    figure = finder.plot(suggest=True)
    figure.savefig(directory / "lr_find.png", dpi=120)
    import matplotlib.pyplot as plt

    plt.close(figure)
    publish_files(loggers, directory / "lr_find.png", "report")
    with open_dict(cfg):
        cfg.optim.lr = float(suggestion)
    module.optimizer_factory = instantiate(cfg.optim)
    log.info(f"tune=lr_find: optim.lr={suggestion:.3g} (plot: {directory / 'lr_find.png'})")
    return {"tune.suggested_lr": float(suggestion)}
