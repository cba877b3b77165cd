"""python -m src.train [group=option ...] [key=value ...]: compose, instantiate, fit, test, summarise."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import Logger, MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src import resolvers
from src.errors import ConfigError, reported_to_user
from src.evaluation import evaluate
from src.losses.base import build_loss
from src.runtime import allow_tf32, keep_large_allocations
from src.summary import merge_metrics, metrics_by_split, print_summary, write_summary
from src.tracking.checkpoint import RunMetadata, read_metadata, store_thresholds
from src.tracking.mlflow import (
    find_mlflow,
    flat_params,
    log_evaluation,
    log_run_config,
    record_failure,
    tag_run,
    training_history,
)
from src.tracking.naming import override_key
from src.tracking.sweep import hydra_run_name, in_multirun, job_failure_file, job_tags

log = logging.getLogger(__name__)
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
    metadata = read_metadata(cfg.ckpt_path)
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
    if multi_process and in_multirun():
        raise ConfigError(
            "--multirun cannot be combined with a multi-process strategy (ddp/deepspeed on several devices): "
            "Lightning relaunches the command line once per rank, which would start the sweep again per rank. "
            "Run the sweep with strategy=auto, or launch each DDP run on its own."
        )


def train(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Fit, then validate and test the best checkpoint; returns (and writes) the run summary.
    ``extra_callbacks`` are for programmatic use (benchmarks, notebooks) beside the configured ones.
    The MLflow run exists from the start, so a job that fails at any point ends FAILED with its error."""
    if cfg.ckpt_path:
        cfg = resume_config(cfg)
    refuse_multirun_with_ddp(cfg)
    keep_large_allocations()
    allow_tf32()
    L.seed_everything(cfg.seed, workers=True)
    loggers = instantiate_dict(cfg.logger)
    mlflow = find_mlflow(loggers) if rank_zero_only.rank == 0 else None
    try:
        if mlflow:
            tag_run(mlflow, job_tags(overrides()))
        return fit_and_evaluate(cfg, loggers, mlflow, extra_callbacks)
    except BaseException as error:
        if mlflow:
            record_failure(mlflow, error)
        raise


def fit_and_evaluate(cfg: DictConfig, loggers: list[Logger], mlflow: MLFlowLogger | None,
                     extra_callbacks: Sequence[L.Callback]) -> dict[str, Any]:
    datamodule = instantiate(cfg.data)
    if mlflow:
        tag_run(mlflow, {"labelwise.data_fingerprint": datamodule.fingerprint})
    loss = build_loss(
        instantiate(cfg.loss),
        task=datamodule.task,
        label_counts=datamodule.label_counts,
        num_examples=datamodule.num_train,
    )
    model = instantiate(
        cfg.model,
        _convert_="all",
        num_labels=datamodule.num_labels,
        task=datamodule.task,
        label_names=datamodule.label_names,
        loss=loss,
        optimizer=instantiate(cfg.optim),
        scheduler=instantiate(cfg.scheduler) if cfg.scheduler else None,
    )
    if cfg.get("compile", False):  # configs stored before the key existed lack it
        model.encoder.compile(dynamic=True)  # in place: checkpoint keys stay those of the plain encoder
    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks = instantiate_dict(cfg.callbacks)
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a progress bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    callbacks += [RunMetadata(resolved, OmegaConf.to_container(cfg, resolve=False)), *extra_callbacks]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    if mlflow:
        log_run_config(
            mlflow,
            {**flat_params(resolved, PARAM_SECTIONS), **group_choices()},
            OmegaConf.to_yaml(resolved),
            overrides(),
            resumed=bool(cfg.ckpt_path),
        )

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = dict(trainer.callback_metrics)
    # read before validate/test: restoring the best checkpoint also restores the callback's older state
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    last = getattr(trainer.checkpoint_callback, "last_model_path", "")
    evaluate_from = "best" if best else None
    metrics.update(trainer.validate(model, datamodule=datamodule, ckpt_path=evaluate_from, verbose=False)[0])
    if cfg.test and datamodule.has_split("test"):
        metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=evaluate_from, verbose=False)[0])

    output_dir = Path(cfg.paths.output_dir)
    splits = ["val"] + (["test"] if cfg.test and datamodule.has_split("test") else [])
    calibration = OmegaConf.to_container(cfg.thresholds) if cfg.thresholds else None
    results = {"thresholds": None, "metrics": {}}
    if trainer.is_global_zero:
        report_dir = output_dir / "report" if cfg.report else None
        history = training_history(mlflow) if mlflow and report_dir else None  # only the report plots it
        results = evaluate(model, datamodule, splits, trainer.precision, calibration, report_dir, history)
        for path in (best, last):
            if path and results["thresholds"]:
                store_thresholds(path, results["thresholds"])
        if mlflow:
            log_evaluation(mlflow, results["metrics"], report_dir)

    summary = {
        "run_name": hydra_run_name(),
        "task": datamodule.task,
        "label_names": datamodule.label_names,
        "output_dir": str(output_dir),
        "best_checkpoint": best or None,
        "last_checkpoint": last or None,
        "mlflow": {
            "run_id": mlflow.run_id if mlflow else None,
            "tracking_uri": cfg.paths.mlflow_uri if mlflow else None,
            "experiment": cfg.task_name,
        },
        "metrics": merge_metrics(metrics_by_split({key: float(value) for key, value in metrics.items()}),
                                 results["metrics"]),
        "thresholds": results["thresholds"],
        "optimized_metric": {"name": cfg.optimized_metric, "value": _metric(metrics, cfg.optimized_metric)},
    }
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_summary(output_dir / "summary.json", summary)
        print_summary(summary)
    return summary


def _metric(metrics: dict[str, Any], name: str) -> float | None:
    return float(metrics[name]) if name in metrics else None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Returns the optimized metric to sweepers; in a sweep a failed job returns None and the sweep goes on."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with reported_to_user():
        refuse_multirun_with_ddp(cfg)  # stops the whole sweep, not just this job
    failure_file = job_failure_file()
    if failure_file is not None:
        failure_file.unlink(missing_ok=True)  # a job run again into its old dir starts clean
    with reported_to_user(failure_file=failure_file):
        return train(cfg)["optimized_metric"]["value"]
    return None


if __name__ == "__main__":
    main()
