"""One MLflow parent run per ``--multirun`` sweep; every job is its child.

A Hydra callback (``hydra.callbacks.mlflow_sweep``) creates the store and the parent run once, before any job
starts (so concurrent jobs never race to create or migrate the SQLite database), and writes the parent's id to
``<sweep dir>/mlflow_parent.json``. Jobs read that file, not an environment variable, so it works for every
launcher: in-process, joblib worker processes and SLURM jobs on other machines that share the sweep dir.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.tracking.naming import override_key, run_name, swept_keys

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent.json"
# the tags the reading side (sweep_results.py, src.compare) relies on
KIND_TAG = "labelwise.kind"
PARENT_TAG = "mlflow.parentRunId"
OVERRIDES_TAG = "labelwise.overrides"
SWEPT_KEYS_TAG = "labelwise.swept_keys"
FOLDS_TAG = "labelwise.cv_folds"  # a cross-validation run: its child runs are its folds
FOLD_TAG = "labelwise.fold"  # one fold's run
MEMBERS_TAG = "labelwise.ensemble_members"  # a seed ensemble's run (ensemble.members): its child runs are its members
MEMBER_TAG = "labelwise.member"  # one member's run
FAILURE_FILE = "error.txt"
ROOT = Path(__file__).resolve().parents[2]


def git_tags() -> dict[str, str]:
    """The code's commit and whether the working tree had uncommitted changes ('unknown' outside git)."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "mlflow.source.git.commit": commit or "unknown",
        "labelwise.git_dirty": "unknown" if status is None else str(bool(status)).lower(),
    }


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job_failure_file() -> Path | None:
    """Where a failed job of a sweep leaves its error (the sweep goes on and counts these at the end)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) / FAILURE_FILE if in_multirun() else None


def read_parent(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The parent run's record (run and experiment id, tracking uri, swept keys) a sweep dir holds, or None."""
    path = Path(sweep_dir) / PARENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def current_sweep() -> dict[str, Any] | None:
    """The parent run's record when this process is a job of a tracked sweep, else None."""
    from hydra.core.hydra_config import HydraConfig

    return read_parent(HydraConfig.get().sweep.dir) if in_multirun() else None


def hydra_run_name() -> str:
    """The current Hydra job's name: its overrides, or in a sweep only the swept ones (``defaults`` outside a
    Hydra app, e.g. the compose API)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "defaults"
    only = None
    if in_multirun():  # the parent record's keys: a joblib/SLURM worker's sys.argv is not the sweep's
        sweep = current_sweep()
        only = set(sweep["swept_keys"] if sweep else swept_keys(sys.argv[1:]))
    return run_name(list(HydraConfig.get().overrides.task), only)


def job_tags(overrides: list[str]) -> dict[str, str]:
    """Tags of every run: the code's git state, and in a tracked sweep the link to its parent."""
    tags = git_tags()
    sweep = current_sweep()
    if sweep:
        tags.update({
            PARENT_TAG: sweep["run_id"],
            KIND_TAG: "job",
            OVERRIDES_TAG: json.dumps(overrides),
            SWEPT_KEYS_TAG: json.dumps(sweep["swept_keys"]),
        })
    return tags


def _mlflow_logger_config(config: DictConfig) -> DictConfig | None:
    loggers = config.get("logger")
    return loggers.get("mlflow") if loggers else None


class SweepCallback(Callback):
    """Creates the MLflow parent run at sweep start (when the mlflow logger is on); at the end closes it and
    reports the failed jobs, exiting non-zero if there were any."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        from src.tracking.mlflow import open_store, process_tags  # lazily: it imports Lightning

        HydraConfig.instance().set_config(config)  # the paths interpolate ${hydra:runtime.cwd}
        logger = _mlflow_logger_config(config)
        if not logger:
            return
        overrides = list(config.hydra.overrides.task)
        keys = swept_keys(overrides)
        fixed = {override_key(item) for item in overrides}  # a command-line value beats the space
        keys += [key for key in config.hydra.sweeper.get("params") or {} if key not in fixed]  # a search space
        client, experiment_id = open_store(logger.tracking_uri, logger.experiment_name, logger.artifact_location)
        sweep_dir = Path(config.hydra.sweep.dir)
        grid = [item for item in overrides if override_key(item) in keys]
        name = f"{' '.join(grid) or 'search over ' + ', '.join(keys)} ({datetime.now():%Y-%m-%d %H:%M})"
        run = client.create_run(experiment_id, run_name=name, tags={
            KIND_TAG: "sweep",
            "labelwise.sweep_dir": str(sweep_dir.resolve()),
            SWEPT_KEYS_TAG: json.dumps(keys),
            "labelwise.sweeper": str(config.hydra.sweeper.get("_target_", "")),
            "labelwise.launcher": str(config.hydra.launcher.get("_target_", "")),
            **git_tags(),
            **process_tags(),
        })
        client.log_text(run.info.run_id, "\n".join(overrides) + "\n", "config/overrides.txt")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        record = {"run_id": run.info.run_id, "experiment_id": experiment_id, "tracking_uri": logger.tracking_uri,
                  "swept_keys": keys}
        (sweep_dir / PARENT_FILE).write_text(json.dumps(record, indent=2) + "\n")
        log.info(f"MLflow parent run {run.info.run_id}: {name}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failed = sorted(path.parent.relative_to(sweep_dir).as_posix() for path in sweep_dir.glob(f"**/{FAILURE_FILE}"))
        jobs = sum(1 for _ in sweep_dir.glob("**/.hydra/overrides.yaml"))
        record = read_parent(sweep_dir)
        if record:
            self._close_parent(record, jobs, len(failed))
        summary = f"sweep finished: {jobs} jobs, {len(failed)} failed"
        if failed:
            raise SystemExit(f"{summary} (job dirs {', '.join(failed)}; the error is in each one's {FAILURE_FILE})")
        log.info(summary)

    @staticmethod
    def _close_parent(record: dict[str, Any], jobs: int, failed: int) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(record["tracking_uri"])
        client.set_tag(record["run_id"], "labelwise.jobs", str(jobs))
        client.set_tag(record["run_id"], "labelwise.failed_jobs", str(failed))
        client.set_terminated(record["run_id"], "FAILED" if jobs and failed == jobs else "FINISHED")
