"""``python -m src.train ensemble.members=K``: K seeds of one configuration, their scores averaged, as one model.

Member i trains the configured model with seed ``seed + i`` (the data split keeps the run's seed, so every member
sees the same train and val rows) through the ordinary :func:`src.train.train`, into ``<run dir>/member<i>/`` and an
MLflow child run of the ensemble run (inside a ``--multirun``: sweep -> configuration -> members), as the folds of
:mod:`src.cv` do. The ensemble run gets:

- every metric of the members as mean and sample std (``val/macro_f1``, ``val/macro_f1_std``);
- the ensemble's val metrics: the members' val scores averaged, thresholds tuned on them with the run's
  ``thresholds`` options (``ensemble_val/macro_f1_tuned``; ``ensemble_val/macro_f1_tuned_crossfit`` is the honest
  estimate); with a test split, its test metrics with those thresholds (``ensemble_test/...``);
- ``<run dir>/ensemble.ckpt``: one checkpoint with every member's weights and config and the ensemble's thresholds,
  which ``src.predict``, ``src.eval``, ``src.thresholds`` and ``src.export format=onnx`` take as one model
  (src/models/ensemble.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from src.cv import Members, print_members, refuse_in_one_process, run_members, scored, spread
from src.errors import ConfigError, LabelwiseError
from src.io import atomic_path
from src.labels import LabelSpace
from src.metrics.thresholds import Thresholds, calibrate, cross_fitted_macro_f1
from src.models.ensemble import ensemble_config
from src.models.module import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from src.tracking.checkpoint import read_checkpoint
from src.tracking.sweep import MEMBER_TAG, MEMBERS_TAG

ARTIFACT = "ensemble.ckpt"
PREDICTIONS = "ensemble_predictions.npz"


def member_config(cfg: DictConfig, member: int, output_dir: Path) -> DictConfig:
    """Member i's run config: a plain run with seed ``seed + i`` and the data seed of the ensemble run (a val split
    carved from train stays the same rows), its own output directory and run name."""
    config = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(config, False)
    config.seed = int(cfg.seed) + member
    if "seed" in cfg.data:
        config.data.seed = cfg.data.seed
    config.ensemble.members = None
    config.paths.output_dir = str(output_dir)
    if config.get("logger") and config.logger.get("mlflow"):
        config.logger.mlflow.run_name = f"member {member}"
    return config


def check(cfg: DictConfig) -> None:
    """What an ensemble cannot be combined with, refused before any member trains."""
    refuse_in_one_process(cfg, "ensemble.members", "resume one member's run on its own (python -m src.train "
                          "ckpt_path=<run dir>/member<i>/checkpoints/last.ckpt); the ensemble is built from finished "
                          "members.", "train each member as its own DDP job (seed=<seed + i>).")
    if not cfg.report:
        raise ConfigError("ensemble.members averages the members' saved val scores (report/predictions_val.npz): "
                          "keep report=true.")
    if not cfg.get("callbacks") or not cfg.callbacks.get("model_checkpoint"):
        raise ConfigError("ensemble.members builds ensemble.ckpt from the members' checkpoints: keep "
                          "callbacks.model_checkpoint (it is null).")
    export = cfg.get("export") or {}
    if export.get("mlflow") or export.get("push_to_hub"):
        raise ConfigError("export.mlflow / export.push_to_hub would export each member on its own: drop them and "
                          "export the ensemble once it is trained: python -m src.export "
                          f"ckpt_path=<run dir>/{ARTIFACT} format=onnx output_dir=<dir>.")


def averaged(member_dirs: list[Path], split: str) -> tuple[LabelSpace, np.ndarray, np.ndarray] | None:
    """The members' saved scores of ``split`` averaged (float64), the targets and the label space; None when a
    member has no scores for it. The members must have scored the same rows."""
    paths = [directory / "report" / f"predictions_{split}.npz" for directory in member_dirs]
    if not all(path.is_file() for path in paths):
        return None
    scores, targets, space = [], None, None
    for path in paths:
        with np.load(path) as saved:
            if targets is None:
                targets, space = saved["targets"], LabelSpace.from_dict(json.loads(str(saved["labels"])))
            elif not np.array_equal(saved["targets"], targets):
                raise LabelwiseError(f"{path}: this member scored other {split} rows than member 0, so their scores "
                                     "cannot be averaged (did the data change while the ensemble trained?).")
            scores.append(saved["scores"].astype(np.float64))
    return space, np.mean(scores, axis=0), targets


def summarise(cfg: DictConfig, chosen: list[int], summaries: list[dict[str, Any]], output_dir: Path,
              run_id: str | None) -> dict[str, Any]:
    member_dirs = [output_dir / f"member{i}" for i in chosen]
    metrics = spread(summaries)
    val = averaged(member_dirs, "val")
    if val is None:
        raise LabelwiseError("the members saved no val scores (report/predictions_val.npz): the ensemble needs a "
                             "validation split.")
    space, scores, targets = val
    truth = targets.astype(bool)
    options = OmegaConf.to_container(cfg.thresholds) if cfg.thresholds else None
    thresholds = calibrate(scores, truth, **options) if space.thresholded and options is not None else None
    metrics["ensemble_val"] = scored(space, scores, targets, thresholds)
    if thresholds is not None:
        metrics["ensemble_val"]["macro_f1_tuned_crossfit"] = cross_fitted_macro_f1(scores, truth, **options)
    saved = {"val_scores": scores.astype(np.float32), "val_targets": targets.astype(np.int8)}
    test = averaged(member_dirs, "test") if cfg.test else None
    if test is not None:
        metrics["ensemble_test"] = scored(space, test[1], test[2], thresholds)
        saved.update(test_scores=test[1].astype(np.float32), test_targets=test[2].astype(np.int8))
    with atomic_path(output_dir / PREDICTIONS) as temporary:
        np.savez_compressed(temporary, **saved)
    artifact = write_artifact(cfg, summaries, thresholds, output_dir / ARTIFACT, run_id)
    split, _, key = cfg.optimized_metric.partition("/")
    value = metrics.get(f"ensemble_{split}", metrics.get(split, {})).get(key)
    return {
        "members": len(chosen), "seeds": [int(cfg.seed) + i for i in chosen], "output_dir": str(output_dir),
        "checkpoint": str(artifact), "metrics": metrics, "notes": [],
        "thresholds": thresholds.to_dict() if thresholds else None,
        "member_runs": [s["mlflow"]["run_id"] for s in summaries],
        "optimized_metric": {"name": cfg.optimized_metric, "value": value},
    }


def write_artifact(cfg: DictConfig, summaries: list[dict[str, Any]], thresholds: Thresholds | None,
                   path: Path, run_id: str | None) -> Path:
    """``ensemble.ckpt``: each member's best checkpoint (last without one) as ``net.members.<i>.*`` weights and its
    stored config, the ensemble's thresholds, the ensemble run's config and MLflow run id; written atomically."""
    state, configs, sources = {}, [], []
    for i, summary in enumerate(summaries):
        source = summary.get("best_checkpoint") or summary.get("last_checkpoint")
        if not source:
            raise ConfigError(f"member {i} saved no checkpoint ({summary['output_dir']}), so ensemble.ckpt cannot be "
                              "built: keep callbacks.model_checkpoint.")
        checkpoint = read_checkpoint(source)
        configs.append(checkpoint[CHECKPOINT_KEY]["net_config"])
        sources.append({"checkpoint": source, "mlflow_run_id": checkpoint[CHECKPOINT_KEY].get("mlflow_run_id")})
        state.update({f"net.members.{i}.{key.removeprefix('net.')}": value
                      for key, value in checkpoint["state_dict"].items() if key.startswith("net.")})
    metadata = {"format": CHECKPOINT_FORMAT, "kind": "ensemble", "resumable": False,
                "net_config": ensemble_config(configs, thresholds.to_dict() if thresholds else None),
                "config": OmegaConf.to_container(cfg, resolve=True),
                "config_unresolved": OmegaConf.to_container(cfg, resolve=False), "members": sources,
                "mlflow_run_id": run_id}
    with atomic_path(path) as temporary:
        torch.save({CHECKPOINT_KEY: metadata, "state_dict": state}, temporary)
    return path


def print_ensemble(result: dict[str, Any]) -> None:
    print_members(result, f"{result['members']}-seed ensemble (members: mean ± sample std)",
                  (("ensemble_val", "ensemble, val"), ("ensemble_test", "ensemble, test")), "ensemble_val",
                  "ensemble val", "ensemble_summary.json")
    print(f"ensemble model: {result['checkpoint']} (python -m src.predict / src.eval / src.export format=onnx "
          "take it as one model)")


def train_ensemble(cfg: DictConfig, overrides: list[str] = ()) -> dict[str, Any]:
    check(cfg)
    count = int(cfg.ensemble.members)
    chosen = list(range(count))
    output_dir = Path(cfg.paths.output_dir)
    return run_members(cfg, list(overrides), Members(
        kind="ensemble", name="member", count=count, count_tag=MEMBERS_TAG, index_tag=MEMBER_TAG, chosen=chosen,
        configure=lambda i, directory: member_config(cfg, i, directory),
        override=lambda i: f"seed={int(cfg.seed) + i}",
        summarise=lambda summaries, run_id: summarise(cfg, chosen, summaries, output_dir, run_id),
        artifacts=(PREDICTIONS,), show=print_ensemble))
