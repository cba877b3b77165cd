"""Run naming, MLflow params flattening, summary shaping."""

from __future__ import annotations

from src.summary import metrics_by_split
from src.tracking.mlflow import flat_params
from src.tracking.naming import run_name, swept_keys


def test_swept_keys_are_the_ones_with_several_values():
    argv = ["--multirun", "loss=bce,ce", "seed=range(1,4)", "optim.lr=1e-3", "+trainer.x=choice(1,2)", "data=csv"]
    assert swept_keys(argv) == ["loss", "seed", "trainer.x"]


def test_run_name_drops_locations_and_keeps_order():
    overrides = ["loss=ce", "data.source.train=/a.csv", "paths.root_dir=/x", "seed=2", "hydra.run.dir=r",
                 "+model.dropout=0.2"]
    assert run_name(overrides) == "loss=ce seed=2 model.dropout=0.2"
    assert run_name(overrides, only={"seed"}) == "seed=2"
    assert run_name(["paths.root_dir=/x"]) == "defaults"


def test_run_name_keeps_callbacks_that_change_training_and_drops_display_and_file_ones():
    trained = ["callbacks.ema={_target_:src.callbacks.averaging.WeightEMA,decay:0.998}",
               "callbacks.early_stopping.patience=5", "callbacks.model_checkpoint.monitor=val/tail_macro_f1",
               "callbacks.gradual_unfreezing=null", "callbacks=light"]
    shown = ["callbacks.progress_bar=null", "callbacks.lr_monitor=null", "callbacks.periodic_checkpoint=null",
             "callbacks.model_checkpoint.save_weights_only=true", "callbacks.model_checkpoint.dirpath=/ckpt"]
    assert run_name([*shown, *trained]) == " ".join(trained)


def test_flat_params_flattens_and_skips_hydra_keys():
    config = {"optim": {"_target_": "x.adamw", "lr": 1e-4, "betas": [0.9, 0.999]}, "seed": 3, "other": {"a": 1}}
    assert flat_params(config, ["optim", "seed", "missing"]) == {
        "optim.lr": "0.0001", "optim.betas": "[0.9, 0.999]", "seed": "3",
    }
    assert len(flat_params({"data": {"labels": ["x" * 100] * 10}}, ["data"])["data.labels"]) == 500


def test_metrics_by_split_groups_and_strips_epoch_suffix():
    metrics = {"val/macro_f1": 0.5, "train/loss_epoch": 0.3, "train/loss_step": 0.2, "epoch": 3.0, "lr-AdamW": 1.0}
    assert metrics_by_split(metrics) == {"val": {"macro_f1": 0.5}, "train": {"loss": 0.3, "loss_step": 0.2}}
