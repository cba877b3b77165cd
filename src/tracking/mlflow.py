"""MLflow through the Lightning logger's client and run id (never the fluent API: in a multirun it leaves
active runs behind)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock
from lightning.pytorch.loggers import Logger, MLFlowLogger
from mlflow import MlflowClient
from mlflow.entities import ViewType

from src.errors import describe

log = logging.getLogger(__name__)
HOST_TAG = "labelwise.host"
PID_TAG = "labelwise.pid"
PROCESS_START_TAG = "labelwise.process_start"  # the pid's start time: a pid the OS gave to a new process is not ours
KILLED_NOTE_TAG = "labelwise.killed_note"

# MLflow's limits: 500-char keys (we stay far below), 6000-char values; keep params short and flat.
_MAX_VALUE = 500


def find_mlflow(loggers: Iterable[Logger]) -> MLFlowLogger | None:
    return next((logger for logger in loggers if isinstance(logger, MLFlowLogger)), None)


def flat_params(config: Mapping[str, Any], sections: Iterable[str]) -> dict[str, str]:
    """``{"optim.lr": "5e-05", ...}`` for the chosen config sections, without Hydra's ``_target_`` keys."""
    params: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, child in value.items():
                if not str(key).startswith("_"):
                    walk(f"{prefix}.{key}", child)
        else:
            params[prefix] = str(value)[:_MAX_VALUE]

    for section in sections:
        if section in config:
            walk(section, config[section])
    return params


def log_run_config(
    logger: MLFlowLogger,
    params: dict[str, str],
    config_yaml: str,
    overrides: list[str],
    resumed: bool = False,
) -> None:
    """Params once (flat), the full resolved config and the override list as artifacts. A resumed run keeps
    its params (MLflow forbids changing them) and gets its new config and overrides beside the first ones."""
    client, run_id = logger.experiment, logger.run_id
    suffix = "_resumed" if resumed else ""
    if not resumed:
        logger.log_hyperparams(params)
    client.log_text(run_id, config_yaml, f"config/config{suffix}.yaml")
    client.log_text(run_id, "\n".join(overrides) + "\n", f"config/overrides{suffix}.txt")


def tag_run(logger: MLFlowLogger, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        logger.experiment.set_tag(logger.run_id, key, value)


def record_failure(logger: MLFlowLogger, error: BaseException) -> None:
    """The run ends FAILED with its error (the user's message, or a bug's traceback) as artifact ``error.txt``."""
    logger.experiment.log_text(logger.run_id, describe(error) + "\n", "error.txt")
    logger.experiment.set_terminated(logger.run_id, "FAILED")


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Held while a SQLite store is created or migrated and an experiment created: MLflow does both on first use
    without coordination, so runs started at once on a fresh store raced (``table logged_models already exists``) and
    lost their runs. The lock is a file beside the database; other stores (a tracking server) serialise themselves."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        yield


def open_store(tracking_uri: str, experiment_name: str, artifact_location: str | None) -> tuple[MlflowClient, str]:
    """A client of the store (created and migrated once, under :func:`store_lock`) and the experiment's id; runs
    left RUNNING by a process of this host that is gone are marked KILLED on the way."""
    with store_lock(tracking_uri):
        client = MlflowClient(tracking_uri)  # creates or migrates the database
        experiment_id = get_or_create_experiment(client, experiment_name, artifact_location)
        mark_dead_runs(client)
    return client, experiment_id


def process_tags() -> dict[str, str]:
    """Where a run's process lives: enough for a later run on the same host to tell whether it died."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PROCESS_START_TAG: process_start(os.getpid()) or ""}


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux ``/proc``), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may hold spaces


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` of this host still runs and is the one that was tagged (same start time)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    now = process_start(pid)
    return not (start and now and now != start)


def mark_dead_runs(client: MlflowClient) -> list[str]:
    """Marks KILLED (with a note tag) every run left RUNNING whose process on this host is gone: a kill -9, an OOM
    kill or a power cut cannot end its run, so it would stay RUNNING forever. Runs of other hosts, and runs without
    the process tags, are left alone. Returns their ids."""
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    runs = client.search_runs(experiments, f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
                              max_results=1000)
    killed = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if not pid.isdigit() or process_alive(int(pid), run.data.tags.get(PROCESS_START_TAG)):
            continue
        note = f"process {pid} on {host} was gone when another run started at {datetime.now():%Y-%m-%d %H:%M:%S}"
        client.set_tag(run.info.run_id, KILLED_NOTE_TAG, note)
        client.set_terminated(run.info.run_id, "KILLED")
        log.warning(f"MLflow run {run.info.run_id} ({run.info.run_name}) marked KILLED: {note}")
        killed.append(run.info.run_id)
    return killed


def reopen_run(logger: MLFlowLogger) -> None:
    """A resumed run is RUNNING again, tagged with its new process (a previous start may have marked it KILLED)."""
    logger.experiment.update_run(logger.run_id, status="RUNNING")
