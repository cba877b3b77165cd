"""Logging an export as an MLflow model (``mlflow.pyfunc``, see src/mlflow_pyfunc.py) to the training run, and
registering it in the model registry, so ``mlflow models serve -m models:/NAME/VERSION`` answers REST requests.

The run is the checkpoint's own (its ``mlflow_run_id``, in the store its config names); a checkpoint without one (or
whose store no longer has it) gets a new run tagged with the checkpoint. The fluent API is used inside one ``with
start_run`` block, so no run is left active, and the process's tracking URI is restored afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from src.errors import ConfigError
from src.inference import Predictor
from src.parity import PARITY_TEXTS

PYFUNC_FILE = Path(__file__).with_name("mlflow_pyfunc.py")
DEFAULT_STORE = "sqlite:///outputs/mlflow.db"


def check_registered_name(name: str | None) -> None:
    """A name the registry would refuse fails here, before any work (MLflow's own rule)."""
    if name is None:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(str(name))
    except MlflowException as error:
        raise ConfigError(f"registered_model_name={name!r}: the MLflow model registry refuses it ({error.message}). "
                          "Use a name without '/' or ':', e.g. registered_model_name=emotions-minilm.") from None


def check_thresholds(predictor: Predictor, allow_default_thresholds: bool) -> None:
    """A served multi-label model decides with its stored thresholds. Without any it decides at 0.5 for every label:
    fine when the run was trained to (``thresholds=null``) or the user says so, refused otherwise (the run tuned
    thresholds, but this checkpoint was saved before any validation epoch, or its config is unknown)."""
    config = predictor.metadata.get("config") or {}
    trained_at_half = "thresholds" in config and config["thresholds"] is None
    if predictor.labels.thresholded and predictor.thresholds is None and not (allow_default_thresholds or
                                                                              trained_at_half):
        raise ConfigError(
            "this multi-label checkpoint holds no tuned decision thresholds (saved before any validation epoch, or "
            "by labelwise 0.1), so the MLflow model would decide at 0.5 for every label. Export a checkpoint "
            "saved after validation (e.g. <run dir>/checkpoints/best-*.ckpt), or pass "
            "allow_default_thresholds=true to serve it at 0.5."
        )


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def target_run(predictor: Predictor, uri: str, checkpoint: Path | None) -> dict[str, Any]:
    """``start_run`` keywords for the training run when the store has it, else for a new run in the run's
    experiment."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from src.tracking.mlflow import get_or_create_experiment

    client = MlflowClient(uri)
    run_id = predictor.metadata.get("mlflow_run_id")
    if run_id:
        try:
            client.get_run(run_id)
            return {"run_id": run_id}
        except MlflowException:
            print(f"MLflow run {run_id} is not in {uri}: logging the model to a new run", flush=True)
    config = predictor.metadata.get("config") or {}
    paths = config.get("paths", {})
    artifacts = f"{paths['mlflow_dir']}/artifacts" if paths.get("mlflow_dir") else None
    experiment = get_or_create_experiment(client, config.get("task_name", "labelwise"), artifacts)
    return {"experiment_id": experiment, "run_name": "export",
            "tags": {"labelwise.kind": "export", "labelwise.checkpoint": str(checkpoint or "")}}


def pip_requirements() -> list[str]:
    """What serving the model needs (given instead of MLflow inferring it, which would load the model in a
    subprocess); torch without a local build tag such as +cpu, which pip indexes do not carry."""
    import mlflow
    import torch
    import transformers

    return [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
            f"transformers=={transformers.__version__}"]


def log_mlflow_model(predictor: Predictor, hf_dir: Path, checkpoint: Path | None, uri: str | None = None,
                     registered_model_name: str | None = None):
    """Log the Hugging Face export ``hf_dir`` as an ``mlflow.pyfunc`` model (signature from its type hints, an input
    example) and register it when a name is given; returns MLflow's ModelInfo."""
    import mlflow

    uri = uri or (predictor.metadata.get("config") or {}).get("paths", {}).get("mlflow_uri") or DEFAULT_STORE
    with tracking_uri(uri), mlflow.start_run(**target_run(predictor, uri, checkpoint)):
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(PYFUNC_FILE), artifacts={"model": str(hf_dir)},
            input_example=list(PARITY_TEXTS[:2]), pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name, tags={"labelwise.checkpoint": str(checkpoint or "")},
        )
