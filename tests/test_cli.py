"""The CLI as a user runs it: subprocesses of `python -m src.train`, a real MLflow SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from tests.helpers import QUIET, run_cli, runs_in, tiny_data_args

pytestmark = pytest.mark.slow


def test_default_run_end_to_end(tmp_path):
    """The README's main job (bundled sample data + bundled MiniLM), shortened by debug=limit."""
    result = run_cli(tmp_path, "debug=limit", "hydra.run.dir=run", *QUIET)

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["label_names"] == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    assert set(summary["metrics"]) == {"train", "val", "test"}
    assert Path(summary["best_checkpoint"]).is_file()
    assert "macro_f1" in result.stdout and summary["mlflow"]["run_id"] in result.stdout.replace("\n", "")
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")  # the store sits under the directory run from
    assert run.info.run_id == summary["mlflow"]["run_id"]
    artifacts = {
        a.path
        for a in mlflow.MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db").list_artifacts(
            run.info.run_id, "config"
        )
    }
    assert artifacts == {"config/config.yaml", "config/overrides.txt"}


def test_sweep_is_one_parent_with_a_child_per_job_and_failures_do_not_stop_it(tmp_path, tiny_bert):
    """2 x 2 grid on multi-label data: the two softmax-CE jobs are refused (ConfigError) and end FAILED with
    their error, the BCE jobs still run, and the sweep exits non-zero naming the failed jobs."""
    args = tiny_data_args(tmp_path, tiny_bert, multilabel=True)
    result = run_cli(
        tmp_path, "--multirun", "loss=ce,bce", "seed=1,2", "trainer.max_epochs=1", *args, "hydra.sweep.dir=sweep",
        check=False,
    )
    assert result.returncode == 1
    assert "sweep finished: 4 jobs, 2 failed" in result.stderr

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    runs = runs_in(tmp_path / "outputs" / "mlflow.db")
    (parent,) = [r for r in runs if r.data.tags.get("labelwise.kind") == "sweep"]
    children = {r.info.run_name: r for r in runs if r is not parent}
    assert parent.info.run_name.startswith("loss=ce,bce seed=1,2 (")
    assert json.loads(parent.data.tags["labelwise.swept_keys"]) == ["loss", "seed"]
    assert parent.data.tags["labelwise.failed_jobs"] == "2" and parent.info.status == "FINISHED"
    assert sorted(children) == ["loss=bce seed=1", "loss=bce seed=2", "loss=ce seed=1", "loss=ce seed=2"]
    record = json.loads((tmp_path / "sweep" / "mlflow_parent.json").read_text())
    assert record["run_id"] == parent.info.run_id
    for name, run in children.items():
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["labelwise.kind"] == "job"
        assert json.loads(tags["labelwise.overrides"])[:2] == name.split()
        assert len(tags["mlflow.source.git.commit"]) == 40 and tags["labelwise.git_dirty"] in ("true", "false")
        if name.startswith("loss=ce"):
            assert run.info.status == "FAILED"
            error = client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))
            assert Path(error).read_text().startswith("error: CrossEntropy works for multiclass data")
        else:
            assert run.info.status == "FINISHED" and "val/macro_f1" in run.data.metrics
            assert run.data.params["optim.lr"] == "0.001" and run.data.params["choice.loss"] == "bce"
            assert len(tags["labelwise.data_fingerprint"]) == 16
            assert (tmp_path / "sweep" / str(int(name[-1]) + 1) / "summary.json").is_file()
    fingerprints = {r.data.tags.get("labelwise.data_fingerprint") for r in children.values()} - {None}
    assert len(fingerprints) == 1


def test_resume_continues_the_same_mlflow_run(tmp_path, tiny_bert):
    args = tiny_data_args(tmp_path, tiny_bert, multilabel=True)
    run_cli(tmp_path, "trainer.max_epochs=1", *args, "hydra.run.dir=first")
    first = json.loads((tmp_path / "first" / "summary.json").read_text())

    run_cli(
        tmp_path,
        f"ckpt_path={first['last_checkpoint']}",
        "trainer.max_epochs=2",
        "hydra.run.dir=second",
        *QUIET,
    )
    second = json.loads((tmp_path / "second" / "summary.json").read_text())

    assert second["mlflow"]["run_id"] == first["mlflow"]["run_id"]
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/outputs/mlflow.db")
    history = client.get_metric_history(run.info.run_id, "train/loss_epoch")
    assert len(history) == 2  # epoch 0 from the first command, epoch 1 from the resumed one
    assert history[0].step < history[1].step
    assert second["label_names"] == first["label_names"]


def test_ddp_on_cpu_with_two_processes(tmp_path, tiny_bert):
    args = tiny_data_args(tmp_path, tiny_bert, multilabel=True)
    run_cli(
        tmp_path,
        "strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        *args,
        "hydra.run.dir=ddp",
    )
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["metrics"]["val"]["macro_f1"] >= 0.0
    assert len(runs_in(tmp_path / "outputs" / "mlflow.db")) == 1  # rank 0 logs, rank 1 does not


def test_multirun_with_ddp_is_refused(tmp_path, tiny_bert):
    args = tiny_data_args(tmp_path, tiny_bert, multilabel=True)
    result = run_cli(
        tmp_path, "--multirun", "strategy=ddp", "seed=1,2", *args, "hydra.sweep.dir=s", check=False
    )
    assert result.returncode != 0
    assert "--multirun cannot be combined with a multi-process strategy" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["loss=nope"], ["error: loss=nope is not an option of loss; it is one of: asymmetric, auto, bce, ce,"]),
        (["data=csv", "data.source.train=missing.csv"], ["missing.csv", "data.source.train"]),
        (["data=csv"], ["error: data.source.train is required: pass data.source.train=PATH/TO/train.csv"]),
        (["ckpt_path=nowhere.ckpt"], ["nowhere.ckpt: no such file"]),
        (["data=goemotions", "data.source.data_dir=no_such_dir"], ["no_such_dir", "data.source.data_dir"]),
    ],
    ids=["unknown-option", "missing-file", "missing-value", "missing-checkpoint", "missing-data-dir"],
)
def test_bad_input_gets_one_clear_message(tmp_path, args, expected):
    result = run_cli(tmp_path, *args, check=False)
    assert result.returncode == 1
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
