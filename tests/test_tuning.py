"""tune=lr_find: Lightning's range test before the fit, its suggestion in the run's config; the weights the fit
starts from are the untouched initial ones."""

from __future__ import annotations

import mlflow
import pytest
import torch
from hydra.utils import instantiate

from src.errors import ConfigError
from src.losses.base import build_loss
from src.models.module import ClassifierModule
from src.tracking.checkpoint import read_metadata
from src.train import train
from src.tuning import tune
from tests.helpers import compose_train, quick, write_dataset


def built(cfg):
    datamodule = instantiate(cfg.data)
    net = instantiate(cfg.model, _partial_=True)(labels=datamodule.label_space, max_length=datamodule.max_length)
    space = datamodule.label_space
    module = ClassifierModule(net, space, loss=build_loss(instantiate(cfg.loss), space),
                              optimizer=instantiate(cfg.optim), scheduler=instantiate(cfg.scheduler))
    return module, datamodule


def test_lr_find_restores_the_weights_and_sets_the_learning_rate(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True, rows=96)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "tune=lr_find", "tune.num_training=20", "data.batch_size=4"))
    module, datamodule = built(cfg)
    before = {key: value.clone() for key, value in module.state_dict().items()}

    found = tune(cfg, module, datamodule, tmp_path / "tuning")

    after = module.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert cfg.optim.lr == found["tune.suggested_lr"] and 1e-7 <= cfg.optim.lr <= 1.0
    assert module.optimizer_factory.keywords["lr"] == cfg.optim.lr
    assert (tmp_path / "tuning" / "lr_find.png").stat().st_size > 0


def test_a_run_with_lr_find_records_the_learning_rate_it_used(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True, rows=96)
    summary = train(compose_train(tmp_path, quick(tiny_bert, paths, "tune=lr_find", "tune.num_training=20",
                                                  "data.batch_size=4", "trainer.max_epochs=1", "report=false",
                                                  "test=false")))
    run = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(summary["mlflow"]["run_id"])
    suggested = float(run.data.params["tune.suggested_lr"])
    assert float(run.data.params["optim.lr"]) == pytest.approx(suggested)
    assert read_metadata(summary["best_checkpoint"])["config"]["optim"]["lr"] == pytest.approx(suggested)
    assert (tmp_path / "run" / "lr_find.png").is_file()  # report=false: in the run dir
    artifacts = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"]).list_artifacts(run.info.run_id, "report")
    assert "report/lr_find.png" in {artifact.path for artifact in artifacts}


def test_batch_size_search_without_a_gpu_is_refused(tmp_path, tiny_bert):
    if torch.cuda.is_available():
        pytest.skip("the refusal is for machines without a GPU")
    paths = write_dataset(tmp_path, multilabel=True)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "tune=batch_size"))
    with pytest.raises(ConfigError, match="no GPU is available"):
        tune(cfg, *built(cfg), tmp_path)
