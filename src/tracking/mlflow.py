"""MLflow through the Lightning logger's client and run id (never the fluent API: in a multirun it leaves
active runs behind)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lightning.pytorch.loggers import Logger, MLFlowLogger
from mlflow import MlflowClient

from src.errors import describe

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
