"""Training health: a loss that turns NaN at the third step is skipped without touching the weights, counted and
logged; past callbacks.training_health.max_bad_steps the run stops with one message."""

from __future__ import annotations

import csv

import lightning as L
import mlflow
import pytest
import torch

from src.callbacks.health import NonFiniteTraining
from src.losses.bce import BinaryCrossEntropy
from src.train import train
from tests.helpers import compose_train, quick, write_dataset


class NaNAtThirdStep(BinaryCrossEntropy):
    """BCE, except that the third training call returns NaN (evaluation calls happen under no_grad)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def forward(self, logits, targets):
        loss = super().forward(logits, targets)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls == 3:
                return loss * float("nan")
        return loss


class Weights(L.Callback):
    """The head's weights after every training step."""

    def __init__(self):
        self.after_step: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.after_step.append(pl_module.net.head.out_proj.weight.detach().clone())


def config(tmp_path, tiny_bert, *extra):
    paths = write_dataset(tmp_path, multilabel=True)
    return compose_train(tmp_path, quick(tiny_bert, paths, "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
                                         "loss=bce", "loss._target_=tests.test_health.NaNAtThirdStep", *extra))


def test_a_nan_step_is_skipped_counted_and_logged_by_every_logger(tmp_path, tiny_bert):
    weights = Weights()
    summary = train(config(tmp_path, tiny_bert, "logger=many"), extra_callbacks=[weights])
    steps = weights.after_step
    assert len(steps) == 6  # 96 rows, batches of 16
    assert torch.equal(steps[2], steps[1])  # the NaN step changed nothing
    assert all(not torch.equal(steps[i], steps[i - 1]) for i in (1, 3, 4, 5))  # the others trained
    assert all(torch.isfinite(w).all() for w in steps)
    client = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"])
    bad = client.get_metric_history(summary["mlflow"]["run_id"], "train/bad_steps")
    assert [m.value for m in sorted(bad, key=lambda m: m.step)] == [0, 0, 1, 1, 1, 1]
    norms = client.get_metric_history(summary["mlflow"]["run_id"], "train/grad_norm")
    assert len(norms) == 6 and sum(m.value == m.value for m in norms) == 5  # the NaN step logs its NaN norm
    # the same numbers through the CSV and TensorBoard loggers of the same real fit
    with next((tmp_path / "run" / "csv").rglob("metrics.csv")).open() as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("train/bad_steps")]
    assert [float(row["train/bad_steps"]) for row in rows] == [0, 0, 1, 1, 1, 1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    assert [e.value for e in events.Scalars("train/bad_steps")] == [0, 0, 1, 1, 1, 1]
    assert len(events.Scalars("train/grad_norm")) == 6


def test_past_the_limit_the_run_stops_with_one_message(tmp_path, tiny_bert):
    with pytest.raises(NonFiniteTraining, match=r"1 optimizer steps had a non-finite loss or gradient \(the last "
                                                r"at step 2\); stopped\. Lower optim.lr"):
        train(config(tmp_path, tiny_bert, "callbacks.training_health.max_bad_steps=0"))


def test_a_train_val_gap_is_warned_about_once(tmp_path, tiny_bert, caplog):
    """Val rows carry the wrong label (rotated): whatever the model learns widens the gap, and the warning says
    so once, with both numbers."""
    import json

    gap = 0.05
    paths = write_dataset(tmp_path, multilabel=False, rows=192)
    names = ["anger", "fear", "joy"]
    rows = [json.loads(line) for line in paths["val"].read_text().splitlines()]
    paths["val"].write_text("".join(json.dumps({**row, "labels": names[(names.index(row["labels"]) + 1) % 3]}) + "\n"
                                    for row in rows))
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "loss=ce", "trainer.max_epochs=3", "report=false",
                                       "test=false", "callbacks.early_stopping=null",
                                       f"callbacks.training_health.max_train_val_gap={gap}"))
    with caplog.at_level("WARNING", logger="src.callbacks.health"):
        summary = train(cfg)
    warnings = [r.getMessage() for r in caplog.records if "overfitting" in r.getMessage()]
    assert summary["metrics"]["train"]["macro_f1"] - summary["metrics"]["val"]["macro_f1"] > gap
    assert len(warnings) == 1 and "train macro-F1 is" in warnings[0] and "val macro-F1" in warnings[0]


class GradientNorms(L.Callback):
    """The global gradient norm after every backward pass, computed independently of the code under test."""

    def __init__(self):
        self.norms: list[float] = []

    def on_after_backward(self, trainer, pl_module) -> None:
        squares = sum(float((p.grad.double() ** 2).sum()) for p in pl_module.parameters() if p.grad is not None)
        self.norms.append(squares ** 0.5)


def test_clipping_reuses_the_logged_gradient_norm(tmp_path, tiny_bert, monkeypatch):
    """One norm computation per step serves the log and the clipping, and the logged norm is the true one."""
    calls = []
    total_norm = torch.nn.utils.get_total_norm
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", lambda *a, **k: calls.append(1) or total_norm(*a, **k))
    reference = GradientNorms()
    cfg = compose_train(tmp_path, quick(tiny_bert, write_dataset(tmp_path, multilabel=True), "trainer.max_epochs=1",
                                        "trainer.log_every_n_steps=1", "trainer.gradient_clip_val=0.5"))
    summary = train(cfg, extra_callbacks=[reference])
    logged = mlflow.MlflowClient(summary["mlflow"]["tracking_uri"]).get_metric_history(summary["mlflow"]["run_id"],
                                                                                        "train/grad_norm")
    assert [m.value for m in sorted(logged, key=lambda m: m.step)] == pytest.approx(reference.norms, rel=1e-5)
    assert len(reference.norms) == 6 and len(calls) == 6  # 96 rows in batches of 16: one norm per step
