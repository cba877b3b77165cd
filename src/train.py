"""python -m src.train [group=option ...] [key=value ...]: instantiate, fit, validate and test the best checkpoint,
summarise."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate, to_absolute_path
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from lightning.pytorch.loggers import Logger, MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from src import resolvers
from src.callbacks.curves import TrainingCurves
from src.callbacks.evaluation import Evaluation
from src.cv import cross_validate
from src.distill import Distillation
from src.ensemble import train_ensemble
from src.errors import ConfigError, LabelwiseError, reported_to_user
from src.export import after_training, check_before_training
from src.losses.base import build_loss
from src.models.module import CHECKPOINT_KEY, ClassifierModule
from src.models.warm_start import existing_source, warm_start
from src.runtime import allow_tf32, keep_large_allocations
from src.schema import app, validate
from src.summary import metrics_by_split, print_summary, write_summary
from src.tracking.checkpoint import (
    AtomicCheckpointIO,
    ResumeState,
    RunMetadata,
    is_deepspeed_checkpoint,
    read_checkpoint,
)
from src.tracking.mlflow import (
    find_mlflow,
    flat_params,
    log_run_config,
    open_store,
    process_tags,
    record_failure,
    reopen_run,
    tag_run,
)
from src.tracking.naming import override_key
from src.tracking.pruning import pruning_callbacks
from src.tracking.sweep import hydra_run_name, in_multirun, job_failure_file, job_tags
from src.tuning import tune

resolvers.register()

PARAM_SECTIONS = ("data", "model", "loss", "optim", "scheduler", "trainer", "seed")


def instantiate_dict(entries: DictConfig | None) -> list[Any]:
    """Named callbacks/loggers; an entry set to null is switched off."""
    return [instantiate(entry) for entry in (entries or {}).values() if entry]


def overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def group_choices() -> dict[str, str]:
    """``{"choice.loss": "asymmetric", ...}``: the option picked per config group, so the MLflow UI can compare
    and plot runs by it (the group's own keys differ between options)."""
    if not HydraConfig.initialized():
        return {}
    choices = HydraConfig.get().runtime.choices
    return {f"choice.{group}": str(option) for group, option in choices.items() if not group.startswith("hydra")}


def resume_config(cfg: DictConfig) -> DictConfig:
    """The checkpoint's own config with this command's key=value overrides on top, so a plain
    ``ckpt_path=...`` continues the same experiment (and MLflow run) in a new output directory."""
    checkpoint = read_checkpoint(cfg.ckpt_path)
    metadata = checkpoint[CHECKPOINT_KEY]
    if metadata.get("kind") == "ensemble":
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} is a seed ensemble (ensemble.ckpt): it can be evaluated, "
                          "predicted with and exported, but not resumed. Resume one member's run instead "
                          "(<run dir>/member<i>/checkpoints/last.ckpt).")
    if not metadata.get("resumable", True):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} was written by labelwise 0.1: it can be evaluated, predicted "
                          "with and exported, but not resumed. Start a new run instead.")
    if "optimizer_states" not in checkpoint and not is_deepspeed_checkpoint(Path(cfg.ckpt_path).expanduser()):
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} holds the weights only (a best checkpoint under the default "
                          "callbacks.model_checkpoint.save_weights_only=best; every checkpoint with true, or "
                          "debug=limit): no optimizer or loop state to resume from. Resume from the run's "
                          "checkpoints/last.ckpt (the full state), or evaluate, predict with or export this one.")
    stored = OmegaConf.create(metadata["config_unresolved"])
    groups = set(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else set()
    changes = [item for item in overrides() if not item.startswith(("ckpt_path=", "hydra."))]
    for item in changes:
        key = override_key(item)
        if key in groups:
            raise ConfigError(f"cannot change config group '{key}' when resuming; start a new run instead.")
    merged = OmegaConf.merge(stored, OmegaConf.from_dotlist([i.lstrip("+") for i in changes]))
    merged.ckpt_path = cfg.ckpt_path
    merged.paths = cfg.paths
    if merged.get("logger") and merged.logger.get("mlflow"):
        merged.logger.mlflow.run_id = metadata["mlflow_run_id"]
    return merged


def refuse_multirun_with_ddp(cfg: DictConfig) -> None:
    strategy = cfg.trainer.get("strategy")
    multi_process = isinstance(strategy, DictConfig) and cfg.trainer.get("devices") not in (1, "1")
    if multi_process and in_multirun() and not slurm_starts_the_ranks(cfg):
        raise ConfigError(
            "--multirun cannot be combined with a multi-process strategy (ddp/fsdp/deepspeed on several devices): "
            "Lightning relaunches the command line once per rank, which would start the sweep again per rank. "
            "Run the sweep with strategy=auto, launch each DDP run on its own, or let SLURM start the ranks "
            "(hydra/launcher=submitit_slurm with hydra.launcher.tasks_per_node = trainer.devices)."
        )


def slurm_starts_the_ranks(cfg: DictConfig) -> bool:
    """A sweep on the submitit SLURM launcher with one task per device: SLURM starts every rank of each job, and
    Lightning (which detects SLURM) joins them instead of relaunching the command line."""
    launcher = HydraConfig.get().launcher if HydraConfig.initialized() else {}
    return "SlurmLauncher" in str(launcher.get("_target_", "")) and \
        str(launcher.get("tasks_per_node")) == str(cfg.trainer.get("devices"))


def check_strategy(cfg: DictConfig) -> None:
    """``strategy=deepspeed``/``fsdp`` where they cannot run, refused before any work: DeepSpeed without its package,
    either on a CPU (Lightning refuses both there), DeepSpeed with clipping by value (it clips by norm only)."""
    strategy = cfg.trainer.get("strategy")
    target = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy)
    name = "deepspeed" if "deepspeed" in target.lower() else "fsdp" if "fsdp" in target.lower() else None
    if name is None:
        return
    if name == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError('strategy=deepspeed needs the deepspeed package: pip install -e ".[deepspeed]" (on a '
                          "machine with CUDA GPUs).")
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()):
        where = "trainer.accelerator=cpu" if accelerator == "cpu" else "this machine has no CUDA GPU"
        raise ConfigError(f"strategy={name} runs on GPUs only and {where}. On CPUs use strategy=ddp (several "
                          "processes, gloo) or strategy=auto.")
    if name == "deepspeed" and cfg.trainer.get("gradient_clip_algorithm") == "value":
        raise ConfigError("trainer.gradient_clip_algorithm=value: DeepSpeed clips by norm only (its gradient_clipping "
                          "is trainer.gradient_clip_val); drop the key or set it to norm.")


def init_source(cfg: DictConfig) -> Path | None:
    """``init_from`` as an existing path, None when unset or when resuming (a resume restores the weights it saved,
    warm-started or not)."""
    if not cfg.get("init_from") or cfg.ckpt_path:
        return None
    return existing_source(to_absolute_path(cfg.init_from))


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = (), tags: dict[str, str] | None = None
          ) -> dict[str, Any]:
    """Fit, then validate and test the best checkpoint; returns (and writes) the run summary.
    ``extra_callbacks`` are for programmatic use (benchmarks, notebooks) beside the configured ones; ``tags`` go on
    the MLflow run last (a cross-validation fold names its CV run as parent).
    The MLflow run exists from the start, so a job that fails at any point ends FAILED with its error."""
    if cfg.ckpt_path:
        cfg = resume_config(cfg)
    validate(cfg)  # again: a resumed config has the checkpoint's values, and the Python API composes its own
    refuse_multirun_with_ddp(cfg)
    check_strategy(cfg)
    init_source(cfg)  # a missing source fails before the data is read and the encoder built
    hub_token = check_before_training(cfg.get("export"))  # a push or registry name that would fail fails now
    keep_large_allocations()
    allow_tf32()
    L.seed_everything(cfg.seed, workers=True)
    mlflow_config = cfg.logger.get("mlflow") if cfg.get("logger") else None
    if mlflow_config and rank_zero_only.rank == 0:  # the store ready before any logger touches it
        open_store(mlflow_config.tracking_uri, mlflow_config.experiment_name, mlflow_config.get("artifact_location"))
    loggers = instantiate_dict(cfg.logger)
    mlflow = find_mlflow(loggers) if rank_zero_only.rank == 0 else None
    try:
        if mlflow:
            if cfg.ckpt_path:
                reopen_run(mlflow)
            tag_run(mlflow, {**job_tags(overrides()), **process_tags(), **(tags or {})})
        summary = fit_and_evaluate(cfg, loggers, mlflow, extra_callbacks)
        if rank_zero_only.rank == 0:
            after_training(cfg.get("export"), summary, hub_token)
        return summary
    except SIGTERMException:  # Lightning's SystemExit without a code: the process would exit 0
        stopped = LabelwiseError("stopped by SIGTERM. Resume with ckpt_path=<run dir>/checkpoints/last.ckpt (or "
                                 "periodic.ckpt, written mid-epoch).")
        if mlflow:
            record_failure(mlflow, stopped)
        raise stopped from None
    except BaseException as error:
        if mlflow:
            record_failure(mlflow, error)
        raise


def fit_and_evaluate(cfg: DictConfig, loggers: list[Logger], mlflow: MLFlowLogger | None,
                     extra_callbacks: Sequence[L.Callback]) -> dict[str, Any]:
    datamodule = instantiate(cfg.data)
    labels = datamodule.label_space
    if mlflow:
        tag_run(mlflow, {"labelwise.data_fingerprint": datamodule.fingerprint})
    # a partial, called with the real objects: Hydra would turn a dataclass argument into a config node
    net = instantiate(cfg.model, _partial_=True)(labels=labels, max_length=datamodule.max_length)
    if source := init_source(cfg):
        warm_start(net, source)
    if cfg.get("compile", False):  # configs stored before the key existed lack it
        net.encoder.compile(dynamic=True)  # in place: checkpoint keys stay those of the plain encoder
    module = ClassifierModule(net, labels, loss=build_loss(instantiate(cfg.loss), labels),
                              optimizer=instantiate(cfg.optim),
                              scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
                              rdrop=cfg.get("rdrop", 0.0),  # configs stored before these keys existed lack them
                              dropout_samples=cfg.get("dropout_samples", 1))

    output_dir = Path(cfg.paths.output_dir)
    report_dir = output_dir / "report" if cfg.report else None
    tuned = {}
    if cfg.get("tune") and not cfg.ckpt_path:  # a resumed run keeps the value its first part found
        tuned = tune(cfg, module, datamodule, report_dir or output_dir, loggers)
    evaluation = Evaluation(OmegaConf.to_container(cfg.thresholds) if cfg.thresholds else None, report_dir,
                            temperature=OmegaConf.to_container(cfg.calibration) if cfg.get("calibration") else None)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks = [c for c in instantiate_dict(cfg.callbacks) if not refused(c, cfg, loggers)]
    pruning = pruning_callbacks(cfg)
    if cfg.get("distill") and cfg.distill.teacher:
        callbacks.append(Distillation(to_absolute_path(cfg.distill.teacher), cfg.distill.alpha,
                                      cfg.distill.temperature, cache_dir=cfg.paths.cache_dir))
    callbacks += [evaluation, TrainingCurves(report_dir / "training_curves.png" if report_dir else None),
                  RunMetadata(resolved, OmegaConf.to_container(cfg, resolve=False)), ResumeState(), *pruning,
                  *extra_callbacks]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=[AtomicCheckpointIO()])
    datamodule.attach(net, trainer.precision)
    if mlflow:
        log_run_config(mlflow, {**flat_params(resolved, PARAM_SECTIONS), **group_choices(), **tuned},
                       OmegaConf.to_yaml(resolved), overrides(), resumed=bool(cfg.ckpt_path))

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    if mlflow:  # after fit: tokenising (at its start) adds the truncation
        datamodule.checks.log_to_mlflow(mlflow.experiment, mlflow.run_id)
    train_metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("train/")}
    pruned_at = next((callback.pruned_at for callback in pruning if callback.pruned_at is not None), None)
    if mlflow and pruned_at is not None:
        tag_run(mlflow, {"optuna.state": "PRUNED", "optuna.pruned_at_epoch": str(pruned_at)})
    # read before validate/test: restoring the best checkpoint also restores the callback's older state
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    last = getattr(trainer.checkpoint_callback, "last_model_path", "")
    evaluated = {}
    evaluate_from = best or None  # the path itself: "best" makes Lightning warn about the periodic checkpoint
    evaluated.update(trainer.validate(module, datamodule=datamodule, ckpt_path=evaluate_from, verbose=False)[0])
    if cfg.test and datamodule.has_split("test"):
        evaluated.update(trainer.test(module, datamodule=datamodule, ckpt_path=evaluate_from, verbose=False)[0])

    metrics = metrics_by_split({**train_metrics, **evaluated})
    for split, row in evaluation.results.items():  # the same pass, at full precision and with the intervals
        metrics[split] = {**metrics.get(split, {}), **row}
    summary = {
        "run_name": hydra_run_name(),
        "task": labels.task,
        "label_names": list(labels.names),
        "output_dir": str(output_dir),
        "best_checkpoint": best or None,
        "last_checkpoint": last or None,
        "checkpoint_mb": {Path(path).name: round(Path(path).stat().st_size / 1e6, 2) for path in (best, last)
                          if path and Path(path).is_file()},  # a weights-only one is about a third of a full one
        "mlflow": {
            "run_id": mlflow.run_id if mlflow else None,
            "tracking_uri": cfg.paths.mlflow_uri if mlflow else None,
            "experiment": cfg.task_name,
        },
        "metrics": metrics,
        "thresholds": net.config.thresholds,
        "temperature": net.config.temperature,
        "pruned_at_epoch": pruned_at,
        "optimized_metric": {"name": cfg.optimized_metric, "value": metric_value(metrics, cfg.optimized_metric)},
        "data_checks": datamodule.checks.to_dict(),
    }
    if trainer.is_global_zero:
        write_summary(output_dir / "summary.json", summary)
        print_summary(summary)
    return summary


def refused(callback: L.Callback, cfg: DictConfig, loggers: list[Logger]) -> bool:
    """Callbacks Lightning refuses in this setting: a progress bar with ``enable_progress_bar=false``, a learning-rate
    monitor without a logger."""
    if isinstance(callback, ProgressBar):
        return not cfg.trainer.get("enable_progress_bar", True)
    return isinstance(callback, LearningRateMonitor) and not loggers


def metric_value(metrics: dict[str, dict[str, Any]], name: str) -> float | None:
    """``"val/macro_f1"`` looked up in the per-split summary metrics."""
    split, _, key = name.partition("/")
    value = metrics.get(split, {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


@app("train")
def main(cfg: DictConfig) -> float | None:
    """Returns the optimized metric to sweepers; in a sweep a failed job returns None and the sweep goes on."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with reported_to_user():
        refuse_multirun_with_ddp(cfg)  # stops the whole sweep, not just this job
    failure_file = job_failure_file()
    if failure_file is not None:
        failure_file.unlink(missing_ok=True)  # a job run again into its old dir starts clean
    with reported_to_user(failure_file=failure_file):
        validate(cfg)  # before any data loads or MLflow run exists
        if cfg.get("cv") and cfg.cv.folds is not None:
            return cross_validate(cfg, overrides())["optimized_metric"]["value"]
        if cfg.get("ensemble") and cfg.ensemble.members is not None:
            return train_ensemble(cfg, overrides())["optimized_metric"]["value"]
        return train(cfg)["optimized_metric"]["value"]
    return None


if __name__ == "__main__":
    main()
