"""Checkpoint options end to end: the default best checkpoint holds the weights only and last.ckpt the full state;
weights-only checkpoints (also without last.ckpt: callbacks=light, what debug=limit uses) evaluate, predict and export
like full ones and are refused for resume; sizes are reported; final metrics are logged at the last step."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from src.errors import ConfigError, user_message
from src.export import export_hf
from src.inference import Predictor
from src.models.module import CHECKPOINT_KEY
from src.train import train
from tests.helpers import compose_train, quick, write_dataset

TEXTS = ["a sunny party", "so rude and unfair", "alone in the dark"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("options")
    paths = write_dataset(root, multilabel=True)
    args = quick(tiny_bert, paths, "trainer.max_epochs=2", "report=false", "callbacks.early_stopping=null")
    full = train(compose_train(root / "full", [*args, "callbacks.model_checkpoint.save_weights_only=false"]))
    light = train(compose_train(root / "light", [*args, "callbacks=light", "logger=none"]))
    default = train(compose_train(root / "default", [*args, "logger=none"]))
    return root, full, light, default


def has_optimizer_state(path: str) -> bool:
    return "optimizer_states" in torch.load(path, map_location="cpu", weights_only=True)


def test_debug_limit_keeps_one_weights_only_checkpoint(tmp_path):
    checkpoint = compose_train(tmp_path, ["debug=limit"]).callbacks.model_checkpoint
    assert checkpoint.save_weights_only is True and checkpoint.save_last is False
    assert compose_train(tmp_path, ["debug=limit", "callbacks=default"]).callbacks.model_checkpoint.save_last is True


def test_weights_only_checkpoints_predict_export_and_are_not_resumed(runs):
    root, full, light, _ = runs
    assert light["last_checkpoint"] is None and full["last_checkpoint"].endswith("last.ckpt")
    files = sorted(p.name for p in (root / "light" / "run" / "checkpoints").iterdir())
    assert files == [light["best_checkpoint"].rsplit("/", 1)[1]]  # no last.ckpt, no periodic.ckpt left behind
    checkpoint = torch.load(light["best_checkpoint"], weights_only=True)
    assert "optimizer_states" not in checkpoint
    assert {"net_config", "config", "config_unresolved", "mlflow_run_id"} <= set(checkpoint[CHECKPOINT_KEY])
    # the same seed and data: the same model as the full run's, at a third of the size (AdamW keeps two moments)
    best_mb, light_mb = (run["checkpoint_mb"][run["best_checkpoint"].rsplit("/", 1)[1]] for run in (full, light))
    assert 0.25 < light_mb / best_mb < 0.45
    light_scores, full_scores = (Predictor.from_checkpoint(run["best_checkpoint"]).scores(TEXTS, precision="32-true")
                                 for run in (light, full))
    np.testing.assert_allclose(light_scores, full_scores, atol=1e-6)
    assert light["metrics"]["test"]["macro_f1"] == pytest.approx(full["metrics"]["test"]["macro_f1"])
    assert export_hf(Predictor.from_checkpoint(light["best_checkpoint"]), root / "export") < 1e-3
    with pytest.raises(ConfigError, match="holds the weights only .*Resume from the run's checkpoints/last.ckpt"):
        train(compose_train(root / "resume", [f"ckpt_path={light['best_checkpoint']}", "logger=none"]))


def test_the_default_best_checkpoint_is_weights_only_and_last_ckpt_full(runs):
    """save_weights_only=best: one optimizer state a run (in last.ckpt, for resuming), not two; false keeps both."""
    root, full, light, default = runs
    assert [has_optimizer_state(default[key]) for key in ("best_checkpoint", "last_checkpoint")] == [False, True]
    assert [has_optimizer_state(full[key]) for key in ("best_checkpoint", "last_checkpoint")] == [True, True]
    sizes = default["checkpoint_mb"]
    assert 0.25 < sizes[default["best_checkpoint"].rsplit("/", 1)[1]] / sizes["last.ckpt"] < 0.45
    np.testing.assert_array_equal(*(Predictor.from_checkpoint(run["best_checkpoint"]).scores(TEXTS)
                                    for run in (default, full)))
    with pytest.raises(ConfigError, match="holds the weights only .*Resume from the run's checkpoints/last.ckpt"):
        train(compose_train(root / "resume_best", [f"ckpt_path={default['best_checkpoint']}", "logger=none"]))


def test_a_last_link_to_a_weights_only_best_is_refused(tmp_path):
    with pytest.raises(Exception) as raised:  # the config check, before any work; the entry points print it
        train(compose_train(tmp_path, ["callbacks.model_checkpoint.save_last=link", "logger=none"]))
    assert user_message(raised.value).startswith("error: callbacks.model_checkpoint.save_last=link makes last.ckpt a "
                                                 "link to the best checkpoint, which save_weights_only=best")


def test_final_metrics_are_logged_at_the_last_step(runs):
    root, full, _, _ = runs
    client = mlflow.MlflowClient(f"sqlite:///{root}/full/outputs/mlflow.db")
    run_id = full["mlflow"]["run_id"]
    steps_per_epoch = 96 // 16
    history = [(m.step, m.value) for m in client.get_metric_history(run_id, "val/macro_f1")]
    assert [step for step, _ in history] == [steps_per_epoch - 1, 2 * steps_per_epoch - 1, 2 * steps_per_epoch]
    assert history[-1][1] == pytest.approx(full["metrics"]["val"]["macro_f1"])
    (test,) = client.get_metric_history(run_id, "test/macro_f1")
    assert test.step == 2 * steps_per_epoch


def test_last_ckpt_is_the_last_epoch_when_the_best_is_earlier(tmp_path, tiny_bert):
    """Lightning 2.6 writes last.ckpt only where a top-k checkpoint was saved; ours is the last epoch's full state
    every time (the best forced to epoch 0: monitor=epoch, mode=min)."""
    args = quick(tiny_bert, write_dataset(tmp_path, multilabel=True), "report=false", "logger=none", "test=false",
                 "callbacks.early_stopping=null", "callbacks.model_checkpoint.monitor=epoch",
                 "callbacks.model_checkpoint.mode=min")
    summary = train(compose_train(tmp_path, args))
    assert summary["best_checkpoint"].endswith("best-epoch00.ckpt")
    last = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (2, 3 * 6)  # 3 epochs of 96 rows / batch 16
    best = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=False)
    assert best["global_step"] == 6
