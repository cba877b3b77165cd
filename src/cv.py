"""``python -m src.train cv.folds=K``: k-fold cross-validation, one run per fold under one parent.

Each fold trains the configured model with :class:`src.data.sources.folds.FoldSource` as its data (fold i as val,
the other development rows as train, the test split untouched) through the ordinary :func:`src.train.train`, into
``<run dir>/fold<i>/`` and an MLflow child run of the CV run (inside a ``--multirun``, the CV run is the sweep's job:
sweep -> configuration -> folds). The CV run gets:

- every metric of the folds as mean and sample std (``val/macro_f1`` is the mean, ``val/macro_f1_std`` the spread);
- out-of-fold predictions (each development row scored by the one model that did not train on it) with thresholds
  tuned on them (``oof/macro_f1_tuned``, and ``oof/macro_f1_tuned_crossfit`` for an honest estimate);
- with a test split, the fold ensemble's test metrics (scores averaged over the K models, decided with the
  out-of-fold thresholds: ``ensemble_test/...``).

The parent run, its child runs and its summary are :func:`run_members`'s, which seed ensembles (src/ensemble.py)
share: a :class:`Members` says what differs (how member i's config is built, how the members' runs are summarised).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from mlflow import MlflowClient
from mlflow.entities import Metric
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from src.errors import ConfigError, describe
from src.io import atomic_path, write_json
from src.labels import LabelSpace
from src.metrics.classification import bucket_macro_f1, full_metrics
from src.metrics.thresholds import CROSSFIT_REPEATS, Thresholds, calibrate, cross_fitted_macro_f1
from src.tracking.sweep import FOLD_TAG, FOLDS_TAG, KIND_TAG, OVERRIDES_TAG, PARENT_TAG, job_tags

HEADLINE = ("macro_f1", "micro_f1", "macro_f1_tuned", "tail_macro_f1")


def fold_config(cfg: DictConfig, fold: int, output_dir: Path) -> DictConfig:
    """The run config of one fold: the data source wrapped in its fold, its own output directory and run name."""
    fold_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(fold_cfg, False)
    fold_cfg.data.source = {"_target_": "src.data.sources.folds.FoldSource", "source": cfg.data.source,
                            "folds": cfg.cv.folds, "fold": fold, "seed": int(cfg.seed)}
    fold_cfg.cv.fold = fold
    fold_cfg.paths.output_dir = str(output_dir)
    if fold_cfg.get("logger") and fold_cfg.logger.get("mlflow"):
        fold_cfg.logger.mlflow.run_name = f"fold {fold}"
    return fold_cfg


def open_parent(cfg: DictConfig, overrides: list[str], members: Members) -> tuple[MlflowClient, str] | None:
    """The parent run in MLflow (None without the mlflow logger): a sweep's job inside ``--multirun``, else a run of
    its own, tagged with its number of members (``src.compare`` expands such a job into its members)."""
    logger = cfg.get("logger") and cfg.logger.get("mlflow")
    if not logger:
        return None
    from src.tracking.mlflow import open_store, process_tags

    client, experiment = open_store(logger.tracking_uri, logger.experiment_name, logger.get("artifact_location"))
    tags = {KIND_TAG: members.kind, **job_tags(overrides), members.count_tag: str(members.count), **process_tags()}
    run = client.create_run(experiment, run_name=f"{logger.run_name} {members.kind}{members.count}", tags=tags)
    return client, run.info.run_id


def spread(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per split, every numeric metric the folds share: ``name`` (mean) and ``name_std`` (sample std; 0 for one)."""
    out: dict[str, dict[str, float]] = {}
    for split in ("train", "val", "test"):
        rows = [s["metrics"].get(split, {}) for s in summaries]
        names = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and all(k in r for r in rows)]
        for name in names:
            values = np.array([float(r[name]) for r in rows])
            out.setdefault(split, {})[name] = float(values.mean())
            out[split][f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return out


def out_of_fold(cfg: DictConfig, space: LabelSpace, assignment: np.ndarray, targets: np.ndarray,
                fold_dirs: list[Path]) -> tuple[dict[str, Any], Thresholds | None]:
    """Each development row scored by the fold model that held it out; thresholds tuned on all of them."""
    scores = np.zeros(targets.shape, dtype=np.float64)
    for fold, directory in enumerate(fold_dirs):
        with np.load(directory / "report" / "predictions_val.npz") as saved:
            scores[assignment == fold] = saved["scores"]
    truth = targets.astype(bool)
    options = OmegaConf.to_container(cfg.thresholds) if cfg.thresholds else None
    thresholds = calibrate(scores, truth, **options) if space.thresholded and options is not None else None
    metrics = scored(space, scores, targets, thresholds)
    if thresholds is not None:
        metrics["macro_f1_tuned_crossfit"] = cross_fitted_macro_f1(scores, truth, **options)
    with atomic_path(Path(cfg.paths.output_dir) / "oof_predictions.npz") as temporary:
        np.savez_compressed(temporary, scores=scores.astype(np.float32), targets=targets.astype(np.int8),
                            fold=assignment, labels=np.array(json.dumps(space.to_dict())))
    return metrics, thresholds


def fold_ensemble(space: LabelSpace, thresholds: Thresholds | None, fold_dirs: list[Path]) -> dict[str, float]:
    """The K fold models as one: their test scores averaged, decided with the out-of-fold thresholds."""
    parts = []
    for directory in fold_dirs:
        with np.load(directory / "report" / "predictions_test.npz") as saved:
            parts.append((saved["scores"].astype(np.float64), saved["targets"]))
    return scored(space, np.mean([p[0] for p in parts], axis=0), parts[0][1], thresholds)


def scored(space: LabelSpace, scores: np.ndarray, targets: np.ndarray, thresholds: Thresholds | None) -> dict:
    """The numbers of a fold run's summary row: every metric at 0.5, macro/micro-F1 also at ``thresholds``, the
    frequency buckets' macro-F1 at the final rule."""
    metrics = {k: v for k, v in full_metrics(space, scores, targets).items() if isinstance(v, float)}
    if thresholds is not None:
        tuned = full_metrics(space, scores, targets, thresholds)
        metrics.update({f"{k}_tuned": tuned[k] for k in ("macro_f1", "micro_f1")})
    metrics.update(bucket_macro_f1(space, targets.astype(bool), space.decide(scores, thresholds)))
    return metrics


@dataclass
class Members:
    """What k-fold CV and a seed ensemble (src/ensemble.py) differ in; :func:`run_members` does the rest (the parent
    run, one child run per member, the summary, MLflow, FAILED on error)."""

    kind: str  # the parent's kind tag, and its summary file <kind>_summary.json
    name: str  # one member's: its kind tag, directory <name><i>, MLflow run name
    count: int
    count_tag: str  # the parent's tag holding count
    index_tag: str  # a member's tag holding its index
    chosen: list[int]  # the members trained by this command
    configure: Callable[[int, Path], DictConfig]  # member i's run config, into that directory
    override: Callable[[int], str]  # member i's setting, added to its overrides tag (cv.fold=i, seed=s)
    summarise: Callable[[list[dict[str, Any]], str | None], dict[str, Any]]  # members' summaries, parent run id
    artifacts: tuple[str, ...]  # files of the run dir logged to the parent run
    show: Callable[[dict[str, Any]], None]


def refuse_in_one_process(cfg: DictConfig, key: str, resume: str, ddp: str) -> None:
    """Members run one after another in this process: no resume (``resume`` says how instead), no multi-process
    strategy (``ddp``)."""
    if cfg.ckpt_path:
        raise ConfigError(f"ckpt_path cannot be combined with {key}: {resume}")
    devices = cfg.trainer.get("devices")
    if isinstance(cfg.trainer.get("strategy"), DictConfig) and devices not in (1, "1"):
        raise ConfigError(f"{key} trains one model after another in one process: use strategy=auto (one "
                          f"device), or {ddp}")


def run_members(cfg: DictConfig, overrides: list[str], members: Members) -> dict[str, Any]:
    from src.train import train

    output_dir = Path(cfg.paths.output_dir)
    parent = open_parent(cfg, list(overrides), members)
    try:
        summaries = []
        for i in members.chosen:
            tags = {}
            if parent:
                tags = {PARENT_TAG: parent[1], KIND_TAG: members.name, members.index_tag: str(i),
                        OVERRIDES_TAG: json.dumps([*overrides, members.override(i)])}
            summaries.append(train(members.configure(i, output_dir / f"{members.name}{i}"), tags=tags))
        result = members.summarise(summaries, parent[1] if parent else None)
    except BaseException as error:
        if parent:
            parent[0].log_text(parent[1], describe(error) + "\n", "error.txt")
            parent[0].set_terminated(parent[1], "FAILED")
        raise
    if parent:
        client, run_id = parent
        result["mlflow"] = {"run_id": run_id, "tracking_uri": client.tracking_uri}
        now = int(time.time() * 1000)
        metrics = [Metric(f"{split}/{name}", value, now, 0) for split, row in result["metrics"].items()
                   for name, value in row.items() if isinstance(value, float) and math.isfinite(value)]
        for start in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(run_id, metrics=metrics[start:start + 1000])
    summary = f"{members.kind}_summary.json"
    write_json(output_dir / summary, result)
    if parent:
        for name in (summary, *members.artifacts):
            if (output_dir / name).is_file():
                client.log_artifact(run_id, str(output_dir / name), members.kind)
        client.set_terminated(run_id, "FINISHED")
    members.show(result)
    return result


def cross_validate(cfg: DictConfig, overrides: list[str] = ()) -> dict[str, Any]:
    from src.data.sources.folds import fold_of_each_row

    refuse_in_one_process(cfg, "cv.folds", "resume one fold's run on its own (python -m src.train "
                          "ckpt_path=<run dir>/fold<i>/checkpoints/last.ckpt).",
                          "run each fold with cv.fold=<i> as its own DDP job.")
    data = instantiate(cfg.data.source).load()
    assignment = fold_of_each_row(data, cfg.cv.folds, int(cfg.seed))  # refuses a bad K before any run is created
    chosen = list(range(cfg.cv.folds)) if cfg.cv.fold is None else [int(cfg.cv.fold)]
    output_dir = Path(cfg.paths.output_dir)
    return run_members(cfg, list(overrides), Members(
        kind="cv", name="fold", count=cfg.cv.folds, count_tag=FOLDS_TAG, index_tag=FOLD_TAG, chosen=chosen,
        configure=lambda fold, directory: fold_config(cfg, fold, directory), override=lambda fold: f"cv.fold={fold}",
        summarise=lambda summaries, _: summarise(cfg, data, assignment, chosen, summaries, output_dir),
        artifacts=("oof_predictions.npz",), show=print_cv))


def summarise(cfg: DictConfig, data, assignment: np.ndarray, chosen: list[int], summaries: list[dict[str, Any]],
              output_dir: Path) -> dict[str, Any]:
    from src.data.sources.folds import development_rows

    metrics = spread(summaries)
    space = data.label_space
    fold_dirs = [output_dir / f"fold{fold}" for fold in chosen]
    notes = []
    complete = len(chosen) == cfg.cv.folds
    if complete and cfg.report:
        targets = space.targets(development_rows(data).labels)
        metrics["oof"], thresholds = out_of_fold(cfg, space, assignment, targets, fold_dirs)
        if "test" in data.splits and cfg.test:
            metrics["ensemble_test"] = fold_ensemble(space, thresholds, fold_dirs)
    else:
        notes.append("out-of-fold metrics need every fold and report=true" if complete or not cfg.report
                     else f"fold {chosen[0]} only: no out-of-fold metrics")
    name = cfg.optimized_metric
    split, _, key = name.partition("/")
    value = metrics.get(split, {}).get(key)
    return {
        "folds": cfg.cv.folds, "trained": chosen, "seed": int(cfg.seed), "output_dir": str(output_dir),
        "metrics": metrics, "notes": notes,
        "fold_runs": [s["mlflow"]["run_id"] for s in summaries],
        "optimized_metric": {"name": name, "value": value},
    }


def print_cv(result: dict[str, Any], console: Console | None = None) -> None:
    print_members(result, f"{len(result['trained'])}-fold cross-validation (mean ± sample std over folds)",
                  (("oof", "out-of-fold"), ("ensemble_test", "fold ensemble, test")), "oof", "out-of-fold",
                  "cv_summary.json", console)


def print_members(result: dict[str, Any], title: str, combined: tuple[tuple[str, str], ...], crossfit: str,
                  crossfit_label: str, summary: str, console: Console | None = None) -> None:
    """The members' val/test metrics as mean ± std, then the ``combined`` rows (split, label) as single numbers and
    the cross-fitted macro-F1 of the ``crossfit`` row."""
    console = console or Console(width=max(Console().width, 110))
    table = Table(title=title)
    table.add_column("split")
    for column in HEADLINE:
        table.add_column(column, justify="right")
    for split in ("val", "test"):
        row = result["metrics"].get(split, {})
        if row:
            table.add_row(split, *(f"{row[c]:.4f} ± {row[c + '_std']:.4f}" if c in row else "-" for c in HEADLINE))
    for split, label in combined:
        row = result["metrics"].get(split)
        if row:
            table.add_row(label, *(f"{row[c]:.4f}" if c in row else "-" for c in HEADLINE))
    console.print(table)
    row = result["metrics"].get(crossfit, {})
    if "macro_f1_tuned_crossfit" in row:
        console.print(f"{crossfit_label} macro-F1, thresholds tuned on one half and scored on the other (mean of "
                      f"{CROSSFIT_REPEATS} halvings): "
                      f"{row['macro_f1_tuned_crossfit']:.4f}")
    for note in result["notes"]:
        console.print(f"note: {note}")
    console.print(f"summary: {result['output_dir']}/{summary}", soft_wrap=True)
