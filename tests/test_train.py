"""In-process training through the compose API: a tiny BERT, real Lightning, real MLflow SQLite store."""

from __future__ import annotations

import json
import random
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from src.errors import ConfigError
from src.tracking.checkpoint import read_metadata
from src.train import train
from tests.conftest import compose_train

WORDS = {
    "joy": ["sunny", "party", "great", "wonderful"],
    "anger": ["furious", "rude", "unfair", "yelling"],
    "fear": ["scary", "dark", "alone", "shaking"],
}
FILLER = ["the", "day", "was", "and", "then", "we", "it", "really", "so"]


def write_dataset(directory: Path, multilabel: bool, rows: int = 96, seed: int = 0) -> dict[str, Path]:
    """JSONL splits whose label is signalled by keywords, so even a tiny model can learn something."""
    rng = random.Random(seed)
    names = list(WORDS)
    paths = {}
    for split, count in (("train", rows), ("val", rows // 3), ("test", rows // 3)):
        lines = []
        for _ in range(count):
            labels = rng.sample(names, rng.choice([1, 2]) if multilabel else 1)
            words = [rng.choice(WORDS[name]) for name in labels] + rng.sample(FILLER, 4)
            rng.shuffle(words)
            lines.append(json.dumps({"text": " ".join(words), "labels": labels if multilabel else labels[0]}))
        paths[split] = directory / f"{split}.jsonl"
        paths[split].write_text("\n".join(lines) + "\n")
    return paths


def on_tiny(tiny_bert: str, paths: dict[str, Path]) -> list[str]:
    """Overrides that train the tiny BERT on JSONL splits."""
    split_args = [f"data.{split}={path}" for split, path in paths.items()]
    return ["data=jsonl", *split_args, f"model.name_or_path={tiny_bert}"]


def quick(tiny_bert: str, paths: dict[str, Path], *extra: str) -> list[str]:
    return [
        *on_tiny(tiny_bert, paths),
        "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false",
        "optim.lr=1e-3",
        "data.batch_size=16",
        *extra,
    ]


@pytest.mark.parametrize("multilabel", [True, False], ids=["multilabel", "multiclass"])
def test_tiny_bert_trains_and_tracks(tmp_path, tiny_bert, multilabel):
    paths = write_dataset(tmp_path, multilabel)
    loss = "bce" if multilabel else "ce"
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, f"loss={loss}"))

    summary = train(cfg)

    assert summary["task"] == ("multilabel" if multilabel else "multiclass")
    assert summary["label_names"] == sorted(WORDS)
    for split in ("train", "val", "test"):
        assert {"loss", "macro_f1", "micro_f1"} <= set(summary["metrics"][split]), split
        assert torch.isfinite(torch.tensor(summary["metrics"][split]["loss"]))
    assert summary["optimized_metric"]["value"] == summary["metrics"]["val"]["macro_f1"]
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["mlflow"]["run_id"] == summary["mlflow"]["run_id"]

    run = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"]).get_run(summary["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.pos_weight" if multilabel else "loss.label_smoothing"] in ("None", "0.0")
    assert "val/macro_f1" in run.data.metrics and "test/macro_f1" in run.data.metrics

    if multilabel:  # thresholds tuned on val, stored in both checkpoints and the summary, applied to test
        assert 0.0 < summary["thresholds"]["global_threshold"] < 1.0
        assert len(summary["thresholds"]["per_label"]) == len(WORDS)
        assert read_metadata(summary["last_checkpoint"])["thresholds"] == summary["thresholds"]
        assert {"macro_f1_tuned", "micro_f1_tuned"} <= set(summary["metrics"]["test"])
        assert 0.0 <= summary["metrics"]["val"]["macro_f1_tuned_crossfit"] <= 1.0
        assert "test/macro_f1_tuned" in run.data.metrics
    else:  # argmax decisions: nothing to tune
        assert summary["thresholds"] is None and "macro_f1_tuned" not in summary["metrics"]["test"]
    low, high = summary["metrics"]["test"]["macro_f1_ci95"]
    assert low <= summary["metrics"]["test"]["macro_f1_tuned" if multilabel else "macro_f1"] <= high
    report = tmp_path / "run" / "report"
    assert (report / "test" / "per_label.csv").is_file() and (report / "val" / "training_curves.png").is_file()
    artifacts = {a.path for a in mlflow.MlflowClient(summary["mlflow"]["tracking_uri"]).list_artifacts(
        summary["mlflow"]["run_id"], "report/test")}
    assert "report/test/per_label.md" in artifacts
    saved = np.load(report / "predictions_test.npz")  # what src.compare's paired bootstrap reads
    final = "macro_f1_tuned" if multilabel else "macro_f1"
    assert f1_score(saved["targets"], saved["predictions"], average="macro", zero_division=0) == pytest.approx(
        summary["metrics"]["test"][final], abs=1e-6)

    metadata = read_metadata(summary["best_checkpoint"])
    assert metadata["label_names"] == sorted(WORDS)
    assert metadata["task"] == summary["task"]
    assert metadata["tokenizer"] == tiny_bert
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

    from src.models.classifier import TextClassifier

    model = TextClassifier(tiny_bert, num_labels=3, task="multilabel", label_names=["a", "b", "c"])
    for parameter in model.parameters():
        parameter.grad = torch.full_like(parameter, 10.0)
    model._trainer = MagicMock(precision_plugin=MagicMock(scaler=None))
    model.configure_gradient_clipping(None, gradient_clip_val=0.5, gradient_clip_algorithm="norm")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-3)  # clip_grad_norm_ divides by (norm + 1e-6)


@pytest.mark.parametrize("scale", [1e-3, 10.0], ids=["within-bounds", "clipped"])
def test_clip_grad_norm_matches_torch(scale):
    """Ours skips the rescale when nothing needs clipping; the gradients and norm equal torch's either way."""
    from src.models.classifier import clip_grad_norm

    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(7, 5)) for _ in range(4)]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for mine, reference in zip(ours, theirs):
        mine.grad = torch.randn(7, 5) * scale
        reference.grad = mine.grad.clone()
    assert clip_grad_norm(iter(ours), 1.0) == torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    for mine, reference in zip(ours, theirs):
        assert torch.equal(mine.grad, reference.grad)


def test_compile_preset_trains_and_saves_plain_checkpoint_keys(tmp_path, tiny_bert):
    """compile=true compiles the encoder in place: it trains, and its checkpoint loads for inference."""
    from src.models.loading import load_for_inference

    paths = write_dataset(tmp_path, multilabel=True, rows=32)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "compile=true", "trainer.max_epochs=1", "logger=none",
                                        "report=false"))
    summary = train(cfg)
    assert torch.isfinite(torch.tensor(summary["metrics"]["train"]["loss"]))
    assert load_for_inference(summary["best_checkpoint"]).model is not None
