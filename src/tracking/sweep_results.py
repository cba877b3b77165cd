"""A ``--multirun`` sweep read back from the MLflow store: its parent run, its jobs and their saved predictions.

What the training side writes: the parent run is tagged ``labelwise.kind = "sweep"``; each job is a child run
(``mlflow.parentRunId``) tagged ``labelwise.overrides`` (JSON list of ``key=value``) and ``labelwise.swept_keys``
(JSON list of the keys the sweep varied). A cross-validation run (``labelwise.cv_folds``) stands for its fold runs,
a seed ensemble's (``labelwise.ensemble_members``) for its member runs: each is a replicate, as a seed is, so
``src.compare`` pairs groups fold by fold (member by member). Per-example decisions, when
saved, are the child's artifact ``report/predictions_<split>.npz`` holding ``targets``, ``predictions`` (0/1
``[N, C]``) and ``labels`` (the label space as JSON).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from src.errors import ConfigError
from src.labels import LabelSpace
from src.tracking.naming import describes_run, override_key
from src.tracking.sweep import (
    FOLD_TAG,
    FOLDS_TAG,
    KIND_TAG,
    MEMBER_TAG,
    MEMBERS_TAG,
    OVERRIDES_TAG,
    PARENT_TAG,
    SWEPT_KEYS_TAG,
)

SEED = "seed"
FINGERPRINT_TAG = "labelwise.data_fingerprint"


@dataclass(frozen=True)
class Job:
    """One child run of a sweep: its settings (``{"loss": "asymmetric", "seed": "1"}``) and final metrics."""

    run_id: str
    status: str
    start_time: int
    settings: dict[str, str]
    metrics: dict[str, float]
    swept_keys: list[str] | None
    data_fingerprint: str | None = None  # the run's labelwise.data_fingerprint tag: same texts and labels, same value

    @property
    def seed(self) -> str | None:
        return self.settings.get(SEED)


def _all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiment_ids(client: MlflowClient) -> list[str]:
    return [experiment.experiment_id for experiment in client.search_experiments()]


def find_sweep(client: MlflowClient, sweep: str) -> Run:
    """The parent run ``sweep`` names: ``"latest"`` (the most recently started sweep in any experiment) or a run id."""
    if sweep == "latest":
        runs = client.search_runs(
            _experiment_ids(client), f"tags.`{KIND_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise ConfigError(f"no sweep in the MLflow store {client.tracking_uri}: run one with "
                              "`python -m src.train --multirun ...`, or point paths.mlflow_uri at the right store.")
        return runs[0]
    try:
        return client.get_run(sweep)
    except MlflowException:
        raise ConfigError(f"sweep={sweep}: no such run in the MLflow store {client.tracking_uri}. Pass the parent "
                          "run id of a --multirun sweep (MLflow UI), or sweep=latest.") from None


def _settings(overrides: list[str]) -> dict[str, str]:
    """``["loss=asymmetric", "+model.dropout=0.2"]`` -> ``{"loss": "asymmetric", "model.dropout": "0.2"}``."""
    return {override_key(item): item.split("=", 1)[1] for item in overrides if "=" in item}


def _children(client: MlflowClient, parent_id: str) -> list[Run]:
    return _all_runs(client, _experiment_ids(client), f"tags.`{PARENT_TAG}` = '{parent_id}'")


def _job(run: Run, settings: dict[str, str], swept: list[str] | None) -> Job:
    return Job(run_id=run.info.run_id, status=run.info.status, start_time=run.info.start_time or 0,
               settings=settings, metrics=dict(run.data.metrics), swept_keys=swept,
               data_fingerprint=run.data.tags.get(FINGERPRINT_TAG))


def _replicate(settings: dict[str, str], member: str) -> dict[str, str]:
    """A fold's (or ensemble member's) settings: ``member`` (``fold2``, ``member1``) joins the seed as the replicate
    (``seed=1/fold2``), ``cv.fold`` goes."""
    settings = {key: value for key, value in settings.items() if key != "cv.fold"}
    seed = settings.pop(SEED, None)
    return {**settings, SEED: f"{seed}/{member}" if seed is not None else member}


def _member(tags: dict[str, str]) -> str | None:
    """``fold<i>`` / ``member<i>`` of a cross-validation fold's or ensemble member's run, None for other runs."""
    if FOLD_TAG in tags:
        return f"fold{tags[FOLD_TAG]}"
    return f"member{tags[MEMBER_TAG]}" if MEMBER_TAG in tags else None


def sweep_jobs(client: MlflowClient, parent: Run) -> list[Job]:
    """The child runs of ``parent``, oldest first (searched in every experiment: a job may log elsewhere); a
    cross-validation (ensemble) child is replaced by its folds (members), and the folds (members) of such a ``parent``
    are its jobs."""
    parent_id = parent.info.run_id
    runs = _children(client, parent_id)
    if not runs:
        raise ConfigError(f"run {parent_id} ({parent.info.run_name}) has no child runs: pass the parent run of a "
                          "--multirun sweep (tagged labelwise.kind=sweep), of a cv.folds run or of an "
                          "ensemble.members run, or sweep=latest.")
    jobs = []
    for run in runs:
        tags = run.data.tags
        swept = json.loads(tags[SWEPT_KEYS_TAG]) if tags.get(SWEPT_KEYS_TAG) else None
        settings = _settings(json.loads(tags.get(OVERRIDES_TAG, "[]")))
        members = _children(client, run.info.run_id) if FOLDS_TAG in tags or MEMBERS_TAG in tags else []
        if members:
            jobs += [_job(member, _replicate(settings, _member(member.data.tags) or "?"), swept) for member in members]
        elif _member(tags):
            jobs.append(_job(run, _replicate(settings, _member(tags)), swept))
        else:
            jobs.append(_job(run, settings, swept))
    return sorted(jobs, key=lambda job: job.start_time)


def grouping_keys(jobs: list[Job]) -> list[str]:
    """The swept keys other than the seed: from the ``labelwise.swept_keys`` tag, or else the keys whose value differs
    between jobs (a key some job lacks counts as differing)."""
    tagged = next((job.swept_keys for job in jobs if job.swept_keys is not None), None)
    if tagged is None:
        keys = list(dict.fromkeys(key for job in jobs for key in job.settings))
        tagged = [key for key in keys if len({job.settings.get(key) for job in jobs}) > 1]
    return [key for key in tagged if key != SEED]


def grouping_keys_across(sweeps: list[list[Job]]) -> list[str]:
    """Over several sweeps' jobs: each sweep's grouping keys, then the keys whose value differs between any two jobs
    (a key some job leaves at its default counts as differing), except the seed and overrides that say where things
    are or how they are shown, not what was trained (``paths.*``, data locations, ``task_name``, the progress bar,
    where checkpoints go, ...): the run names' list (:func:`describes_run`)."""
    everyone = [job for jobs in sweeps for job in jobs]
    keys = [key for jobs in sweeps for key in grouping_keys(jobs)]
    keys += [key for key in dict.fromkeys(key for job in everyone for key in job.settings)
             if key != SEED and describes_run(key) and len({job.settings.get(key) for job in everyone}) > 1]
    return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class Predictions:
    """A run's saved per-example 0/1 targets and decisions ``[N, C]`` and its label space."""

    labels: LabelSpace
    targets: np.ndarray
    predictions: np.ndarray


def load_predictions(client: MlflowClient, run_id: str, split: str) -> Predictions | None:
    """The run's ``report/predictions_<split>.npz``, or None when it was not saved (or saved by labelwise 0.1,
    without its label space)."""
    name = f"predictions_{split}.npz"
    if name not in {Path(info.path).name for info in client.list_artifacts(run_id, "report")}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        with np.load(client.download_artifacts(run_id, f"report/{name}", tmp)) as saved:
            if "labels" not in saved:
                return None
            return Predictions(LabelSpace.from_dict(json.loads(str(saved["labels"]))), np.asarray(saved["targets"]),
                               np.asarray(saved["predictions"]))
