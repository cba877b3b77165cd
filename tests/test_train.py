"""In-process training through the compose API: a tiny BERT, real Lightning, real MLflow SQLite store."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from src.errors import ConfigError
from src.tracking.checkpoint import read_metadata
from src.train import train
from tests.helpers import WORDS, compose_train, quick, write_dataset


@pytest.mark.parametrize("multilabel", [True, False], ids=["multilabel", "multiclass"])
def test_tiny_bert_trains_and_tracks(tmp_path, tiny_bert, multilabel):
    paths = write_dataset(tmp_path, multilabel)
    loss = "bce" if multilabel else "ce"
    monitored = "macro_f1" if multilabel else "tail_macro_f1"  # the rarest third of the labels by training count
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, f"loss={loss}", f"optimized_metric=val/{monitored}"))

    summary = train(cfg)

    assert summary["task"] == ("multilabel" if multilabel else "multiclass")
    assert summary["label_names"] == sorted(WORDS)
    for split in ("train", "val", "test"):
        assert {"loss", "macro_f1", "micro_f1"} <= set(summary["metrics"][split]), split
        assert torch.isfinite(torch.tensor(summary["metrics"][split]["loss"]))
    assert summary["optimized_metric"]["value"] == summary["metrics"]["val"][monitored]
    assert {"head_macro_f1", "medium_macro_f1", "tail_macro_f1"} <= set(summary["metrics"]["test"])
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["mlflow"]["run_id"] == summary["mlflow"]["run_id"]

    run = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.pos_weight" if multilabel else "loss.label_smoothing"] in ("None", "0.0")
    assert "val/macro_f1" in run.data.metrics and "test/macro_f1" in run.data.metrics
    client = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"])
    epochs = cfg.trainer.max_epochs
    assert len(client.get_metric_history(run.info.run_id, "val/tail_macro_f1")) >= epochs  # every epoch, then final

    if multilabel:  # thresholds tuned on val, stored in both checkpoints and the summary, applied to test
        assert 0.0 < summary["thresholds"]["global_threshold"] < 1.0
        assert len(summary["thresholds"]["per_label"]) == len(WORDS)
        # stored with the weights they were tuned for: the best checkpoint's are the summary's
        assert read_metadata(summary["best_checkpoint"])["net_config"]["thresholds"] == summary["thresholds"]
        assert len(read_metadata(summary["last_checkpoint"])["net_config"]["thresholds"]["per_label"]) == 3
        assert {"macro_f1_tuned", "micro_f1_tuned"} <= set(summary["metrics"]["test"])
        assert 0.0 <= summary["metrics"]["val"]["macro_f1_tuned_crossfit"] <= 1.0
        assert "test/macro_f1_tuned" in run.data.metrics
    else:  # argmax decisions: nothing to tune
        assert summary["thresholds"] is None and "macro_f1_tuned" not in summary["metrics"]["test"]
    low, high = summary["metrics"]["test"]["macro_f1_ci95"]
    assert low <= summary["metrics"]["test"]["macro_f1_tuned" if multilabel else "macro_f1"] <= high
    report = tmp_path / "run" / "report"
    assert (report / "test" / "per_label.csv").is_file() and (report / "training_curves.png").is_file()
    artifacts = {a.path for a in mlflow.MlflowClient(summary["mlflow"]["tracking_uri"]).list_artifacts(
        summary["mlflow"]["run_id"], "report/test")}
    assert "report/test/per_label.md" in artifacts
    saved = np.load(report / "predictions_test.npz")  # what src.compare's paired bootstrap reads
    final = "macro_f1_tuned" if multilabel else "macro_f1"
    assert f1_score(saved["targets"], saved["predictions"], average="macro", zero_division=0) == pytest.approx(
        summary["metrics"]["test"][final], abs=1e-6)

    metadata = read_metadata(summary["best_checkpoint"])
    assert metadata["net_config"]["label_space"]["names"] == sorted(WORDS)
    assert metadata["net_config"]["label_space"]["task"] == summary["task"]
    assert metadata["net_config"]["base_model"] == tiny_bert
    assert metadata["mlflow_run_id"] == summary["mlflow"]["run_id"]
    assert metadata["config"]["loss"]["_target_"].endswith(
        "BinaryCrossEntropy" if multilabel else "CrossEntropy"
    )


def test_tiny_bert_learns_keywords(tmp_path, tiny_bert):
    """Not only runs: on keyword-signalled labels the model beats chance clearly."""
    paths = write_dataset(tmp_path, multilabel=False, rows=192)
    cfg = compose_train(
        tmp_path, quick(tiny_bert, paths, "loss=ce", "trainer.max_epochs=6", "callbacks.early_stopping=null")
    )
    summary = train(cfg)
    assert summary["metrics"]["val"]["accuracy"] > 0.6  # chance is 1/3


def test_softmax_loss_on_multilabel_data_is_refused(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "loss=ce"))
    with pytest.raises(ConfigError, match="this dataset is multilabel. Use loss=bce"):
        train(cfg)


def test_missing_checkpoint_is_a_clear_error(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, f"ckpt_path={tmp_path}/nope.ckpt"))
    with pytest.raises(ConfigError, match="nope.ckpt: no such file"):
        train(cfg)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_every_precision_trains_with_gradient_clipping(tmp_path, tiny_bert, precision):
    """bf16/fp32 use the fused optimizer and our own clipping; fp16 a non-fused one that Lightning unscales
    before clipping."""
    paths = write_dataset(tmp_path, multilabel=True, rows=48)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, f"trainer.precision={precision}", "trainer.max_epochs=1",
                                        "trainer.gradient_clip_val=0.5", "logger=none"))
    summary = train(cfg)
    assert torch.isfinite(torch.tensor(summary["metrics"]["train"]["loss"]))


def test_direct_clipping_bounds_the_gradient_norm(tiny_bert):
    from unittest.mock import MagicMock

    from src.labels import LabelSpace
    from src.models.build import classifier
    from src.models.module import ClassifierModule

    labels = LabelSpace("multilabel", ("a", "b", "c"))
    model = ClassifierModule(classifier(tiny_bert, labels=labels), labels)
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 10.0)
    model._trainer = MagicMock(precision_plugin=MagicMock(scaler=None))
    model.configure_gradient_clipping(None, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-3)  # clip_grad_norm_ divides by (norm + 1e-6)


@pytest.mark.parametrize("scale", [1e-3, 10.0], ids=["within-bounds", "clipped"])
def test_clip_grad_norm_matches_torch(scale):
    """Ours skips the rescale when nothing needs clipping; the gradients and norm equal torch's either way."""
    from src.models.module import clip_grad_norm

    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(7, 5)) for _ in range(4)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for mine, reference in zip(ours, theirs):
        mine.grad = torch.randn(7, 5) * scale
        reference.grad = mine.grad.clone()
    known = torch.nn.utils.get_total_norm([p.grad for p in ours])  # a norm computed before (the health callback's)
    again = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for copy, mine in zip(again, ours):
        copy.grad = mine.grad.clone()
    assert clip_grad_norm(iter(ours), 1.0) == torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    assert clip_grad_norm(again, 1.0, known) == known
    for mine, copy, reference in zip(ours, again, theirs):
        assert torch.equal(mine.grad, reference.grad) and torch.equal(copy.grad, reference.grad)


def test_compile_preset_trains_and_saves_plain_checkpoint_keys(tmp_path, tiny_bert):
    """compile=true compiles the encoder in place: it trains, and its checkpoint loads for inference."""
    from src.inference import Predictor

    paths = write_dataset(tmp_path, multilabel=True, rows=32)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "compile=true", "trainer.max_epochs=1", "logger=none",
                                        "report=false"))
    summary = train(cfg)
    assert torch.isfinite(torch.tensor(summary["metrics"]["train"]["loss"]))
    assert Predictor.from_checkpoint(summary["best_checkpoint"]).net is not None
