"""Optuna pruning from inside a job: ``hparams_search=optuna hydra.sweeper.pruner=median|hyperband``.

The sweeper passes each job its trial (``trial.storage``, ``trial.study``, ``trial.id``); every validation epoch
this callback reports the monitored metric to the trial in the study's storage, which works whether the job runs in
the sweeper's process, a joblib worker or a SLURM node that sees the same storage. When the pruner says the trial is
worse than its peers at that epoch, the fit stops there (the best checkpoint so far is still evaluated and logged),
the trial is marked for the sweeper to tell Optuna ``PRUNED``, and the MLflow run is tagged ``optuna.state=PRUNED``.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig

from src.errors import ConfigError

log = logging.getLogger(__name__)
PRUNED_ATTR = "pruned_at_epoch"  # the trial's user attribute the sweeper reads


def make_pruner(name: str | None, startup_trials: int, warmup_epochs: int, max_epochs: int):
    """The sweeper's pruner; the job builds the same one (a study loaded from storage has the default pruner)."""
    import optuna

    if name is None:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    raise ConfigError(f"hydra.sweeper.pruner={name}: use median, hyperband or null.")


class OptunaPruning(L.Callback):
    def __init__(self, storage: str, study: str, trial_id: int, monitor: str, pruner):
        import optuna

        loaded = optuna.load_study(study_name=study, storage=storage, pruner=pruner)
        self.trial = optuna.trial.Trial(loaded, trial_id)
        self.monitor = monitor
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            self.trial.set_user_attr(PRUNED_ATTR, epoch)
            log.info(f"Optuna pruned this trial at epoch {epoch} ({self.monitor}={float(value):.4f})")
            trainer.should_stop = True


def pruning_callbacks(cfg: DictConfig) -> list[OptunaPruning]:
    """The callback when the sweeper gave this job a trial to report to (a pruner is set), else none."""
    trial = cfg.get("trial")
    if not trial or trial.get("id") is None:
        return []
    from hydra.core.hydra_config import HydraConfig

    sweeper = HydraConfig.get().sweeper
    pruner = make_pruner(sweeper.pruner, sweeper.pruner_startup_trials, sweeper.pruner_warmup_epochs,
                         int(cfg.trainer.max_epochs))
    return [OptunaPruning(trial.storage, trial.study, int(trial.id), cfg.optimized_metric, pruner)]
