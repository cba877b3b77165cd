"""python -m src.eval ckpt_path=PATH [data=...] [split=test]: score a checkpoint on any labelled split.

The same Lightning test loop and evaluation callback as training: the thresholds stored with the model, the same
report, logged to an MLflow run tagged with the training run's id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate, to_absolute_path
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

from src import resolvers
from src.callbacks.evaluation import Evaluation
from src.data.datamodule import TextDataModule
from src.errors import ConfigError, reported_to_user
from src.inference import Predictor
from src.models.module import ClassifierModule
from src.predict import plain
from src.runtime import fast_precision
from src.schema import app, validate
from src.summary import print_summary, write_summary
from src.tracking.mlflow import open_store

resolvers.register()


def source_config(cfg: DictConfig, predictor: Predictor) -> dict[str, Any]:
    """The data source to read: the command line's ``data=...`` or the checkpoint's own; a file with no label
    vocabulary of its own is read against the model's labels."""
    # only the source: data configs also interpolate model/seed settings that an eval config does not have
    source = (OmegaConf.to_container(cfg.data.source, resolve=True) if cfg.get("data")
              else dict(predictor.metadata["config"]["data"]["source"]))
    if "labels" in source and not source["labels"]:
        source["labels"] = list(predictor.labels.names)
    return source


def evaluate_checkpoint(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path is required: python -m src.eval ckpt_path=<run dir>/checkpoints/<name>.ckpt")
    ckpt_path = Path(to_absolute_path(str(cfg.ckpt_path))).expanduser()
    predictor = Predictor.from_checkpoint(ckpt_path)
    predictor.use_thresholds(plain(cfg.get("thresholds")))
    labels = predictor.labels
    # the run's own data (no data= given): its validation split again, carved from train as the run carved it when
    # the source has none (the run's fraction and seed), so split=val and split=train are the rows the run used
    own_data = not cfg.get("data")
    datamodule = TextDataModule(
        instantiate(source_config(cfg, predictor), _convert_="all"), tokenizer=predictor.net.config.base_model,
        max_length=predictor.max_length, eval_batch_size=cfg.batch_size, cache_dir=f"{cfg.paths.cache_dir}/tokens",
        labels=labels, test_split=cfg.split, **(predictor.carve_options() if own_data else {"val_fraction": None}),
    )
    output_dir = Path(cfg.paths.output_dir)
    tags = {"labelwise.kind": "eval", "labelwise.checkpoint": str(ckpt_path)}
    if cfg.get("thresholds") is not None:
        tags["labelwise.thresholds"] = predictor.net.config.thresholds["policy"]
    if predictor.metadata.get("mlflow_run_id"):
        tags["labelwise.training_run_id"] = predictor.metadata["mlflow_run_id"]
    open_store(cfg.paths.mlflow_uri, cfg.task_name, f"{cfg.paths.mlflow_dir}/artifacts")  # once, under its lock
    logger = MLFlowLogger(experiment_name=cfg.task_name, run_name=f"eval {cfg.split}",
                          tracking_uri=cfg.paths.mlflow_uri, tags=tags,
                          artifact_location=f"{cfg.paths.mlflow_dir}/artifacts")
    # the run's own validation rows: its max_f1 thresholds were tuned on them, so macro_f1_tuned is in-sample there;
    # the cross-fitted estimate (tuned on one half, scored on the other) is what rows the thresholds never saw get
    own_val = cfg.split == "val" and own_data
    evaluation = Evaluation(predictor.tuning_options() if own_val else None,
                            report_dir=output_dir / "report" if cfg.report else None)
    trainer = L.Trainer(accelerator="auto", devices=1, precision=cfg.precision or fast_precision(), logger=logger,
                        callbacks=[evaluation], enable_checkpointing=False, enable_model_summary=False,
                        default_root_dir=str(output_dir))
    datamodule.load()
    datamodule.attach(predictor.net, trainer.precision)
    if not datamodule.has_split(cfg.split):
        raise ConfigError(f"split={cfg.split}: the data has only {sorted(datamodule.data.splits)}. Pick one of them.")
    trainer.test(ClassifierModule(predictor.net, labels), datamodule=datamodule, verbose=False)
    summary = {
        "run_name": f"eval {cfg.split} of {ckpt_path}",
        "task": labels.task,
        "label_names": list(labels.names),
        "output_dir": str(output_dir),
        "best_checkpoint": str(ckpt_path),
        "mlflow": {"run_id": logger.run_id, "tracking_uri": cfg.paths.mlflow_uri, "experiment": cfg.task_name},
        "metrics": {cfg.split: evaluation.results[cfg.split]},
        "thresholds": predictor.net.config.thresholds,
    }
    write_summary(output_dir / "summary.json", summary)
    print_summary(summary)
    return summary


@app("eval")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with reported_to_user():
        validate(cfg, "eval")
        evaluate_checkpoint(cfg)


if __name__ == "__main__":
    main()
