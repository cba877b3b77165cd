"""python -m src.eval ckpt_path=PATH [data=...] [split=test]: score a checkpoint on any labelled split.

Uses the thresholds stored in the checkpoint, writes the same report as training, and logs an MLflow run
tagged with the training run's id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.utils import instantiate
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from src import resolvers
from src.data.records import LabelledData
from src.errors import DataError, reported_to_user
from src.evaluation import split_metrics
from src.models.inference import predict_scores
from src.models.loading import Loaded, load_for_inference
from src.summary import print_summary
from src.tracking.mlflow import get_or_create_experiment, log_results

resolvers.register()


def load_split(source_cfg: dict[str, Any], split: str, label_names: list[str]) -> tuple[list[str], np.ndarray]:
    """Texts and targets of ``split``, with label ids in the checkpoint's own label order."""
    source_cfg = dict(source_cfg)
    if "labels" in source_cfg and not source_cfg["labels"]:
        source_cfg["labels"] = label_names  # a new file's labels are read against the model's vocabulary
    data: LabelledData = instantiate(source_cfg, _convert_="all").load()
    if split not in data.splits:
        raise DataError(f"split={split}: the data has only {sorted(data.splits)}. Pick one of them.")
    unknown = sorted(set(data.label_names) - set(label_names))
    if unknown:
        raise DataError(f"labels {unknown} are not among the model's labels {label_names}.")
    position = {name: label_names.index(name) for name in data.label_names}
    records = data.splits[split]
    if data.task == "multiclass":
        return records.texts, np.asarray([position[data.label_names[ids[0]]] for ids in records.labels])
    targets = np.zeros((len(records), len(label_names)), dtype=np.float32)
    for row, ids in enumerate(records.labels):
        targets[row, [position[data.label_names[i]] for i in ids]] = 1.0
    return records.texts, targets


def log_to_mlflow(cfg: DictConfig, loaded: Loaded, split: str, row: dict[str, Any], report_dir: Path | None) -> str:
    client = MlflowClient(cfg.paths.mlflow_uri)
    experiment_id = get_or_create_experiment(client, cfg.task_name, f"{cfg.paths.mlflow_dir}/artifacts")
    tags = {"labelwise.kind": "eval", "labelwise.checkpoint": str(Path(cfg.ckpt_path).resolve())}
    if loaded.metadata.get("mlflow_run_id"):
        tags["labelwise.training_run_id"] = loaded.metadata["mlflow_run_id"]
    run_id = client.create_run(experiment_id, run_name=f"eval {split}", tags=tags).info.run_id
    log_results(client, run_id, {split: row}, report_dir)
    client.set_terminated(run_id)
    return run_id


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    loaded = load_for_inference(cfg.ckpt_path)
    # only the source: data configs also interpolate model/seed settings that an eval config does not have
    source = (OmegaConf.to_container(cfg.data.source, resolve=True) if cfg.get("data")
              else loaded.metadata["config"]["data"]["source"])
    texts, targets = load_split(source, cfg.split, loaded.label_names)
    scores = predict_scores(loaded.model, loaded.tokenizer, texts, loaded.max_length)
    output_dir = Path(cfg.paths.output_dir)
    report_dir = output_dir / "report" if cfg.report else None
    row = split_metrics(scores, targets, loaded.task, loaded.label_names, loaded.thresholds, report_dir=report_dir)
    summary = {
        "run_name": f"eval {cfg.split} of {cfg.ckpt_path}",
        "task": loaded.task,
        "label_names": loaded.label_names,
        "output_dir": str(output_dir),
        "best_checkpoint": str(cfg.ckpt_path),
        "mlflow": {"run_id": log_to_mlflow(cfg, loaded, cfg.split, row, report_dir),
                   "tracking_uri": cfg.paths.mlflow_uri, "experiment": cfg.task_name},
        "metrics": {cfg.split: row},
        "thresholds": loaded.thresholds.to_dict() if loaded.thresholds else None,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "eval_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    if not cfg.ckpt_path:
        raise SystemExit("error: ckpt_path is required: python -m src.eval ckpt_path=<run dir>/checkpoints/<name>.ckpt")
    with open_dict(cfg):
        cfg.ckpt_path = str(Path(cfg.ckpt_path).expanduser())
    with reported_to_user():
        evaluate_checkpoint(cfg)


if __name__ == "__main__":
    main()
