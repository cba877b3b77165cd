"""Checkpoints: plain contents (weights_only), one clear message for every unreadable file, the 0.1 layout converted,
and atomic writes that a failure or a kill -9 cannot leave half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from src.errors import ConfigError
from src.inference import Predictor
from src.io import atomic_directory, atomic_path
from src.models.module import CHECKPOINT_KEY
from src.tracking.checkpoint import AtomicCheckpointIO, read_checkpoint, read_metadata
from src.train import train
from tests.helpers import QUIET, ROOT, compose_train, on_tiny, quick, write_dataset

TEXTS = ["a sunny party", "so rude and unfair", "alone in the dark"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    root = tmp_path_factory.mktemp("trained")
    paths = write_dataset(root, multilabel=True)
    summary = train(compose_train(root, quick(tiny_bert, paths, "trainer.max_epochs=1", "logger=none", "test=false",
                                             "model.hidden=6")))
    return root, summary


def test_a_checkpoint_holds_only_plain_types_and_the_whole_model(trained):
    _, summary = trained
    checkpoint = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)  # no pickled objects
    entry = checkpoint[CHECKPOINT_KEY]
    assert entry["format"] == 2 and entry["net_config"]["head_hidden"] == 6
    assert set(entry) >= {"net_config", "config", "config_unresolved", "mlflow_run_id"}
    assert all(key.startswith(("net.", "loss.")) for key in checkpoint["state_dict"])


def test_readers_name_the_problem(tmp_path, trained):
    with pytest.raises(ConfigError, match="missing.ckpt: no such file"):
        read_metadata(tmp_path / "missing.ckpt")
    with pytest.raises(ConfigError, match="a directory, not a checkpoint file"):
        Predictor.from_checkpoint(tmp_path)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match="not a labelwise checkpoint"):
        read_metadata(foreign)
    whole = Path(trained[1]["best_checkpoint"]).read_bytes()
    for name, content in (("truncated.ckpt", whole[: len(whole) // 2]), ("text.ckpt", b"not a checkpoint at all"),
                          ("empty.ckpt", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=f"{name}: cannot be read as a checkpoint .*truncated, corrupt"):
            Predictor.from_checkpoint(tmp_path / name)


def first_layout(checkpoint: dict, tiny_bert: str) -> dict:
    """A checkpoint as labelwise 0.1 wrote it: a TextClassifier's keys and hyperparameters, metadata beside them."""
    config = checkpoint[CHECKPOINT_KEY]["net_config"]
    hidden = config["head_hidden"]
    renamed = {"head.dense.": "head.1.", "head.out_proj.": "head.4." if hidden else "head.1."}
    state = {}
    for key, value in checkpoint["state_dict"].items():
        key = key.removeprefix("net.")
        prefix = next((new for new in renamed if key.startswith(new)), None)
        state[renamed[prefix] + key.removeprefix(prefix) if prefix else key] = value
    labels = config["label_space"]
    return {
        "state_dict": state,
        "hyper_parameters": {"name_or_path": tiny_bert, "num_labels": len(labels["names"]), "task": labels["task"],
                             "label_names": labels["names"], "pooling": config["pooling"], "dropout": 0.1,
                             "hidden": hidden},
        CHECKPOINT_KEY: {"config": checkpoint[CHECKPOINT_KEY]["config"], "label_names": labels["names"],
                         "task": labels["task"], "tokenizer": tiny_bert, "mlflow_run_id": None,
                         "thresholds": config["thresholds"],
                         "config_unresolved": checkpoint[CHECKPOINT_KEY]["config_unresolved"]},
    }


def test_a_checkpoint_of_the_first_layout_predicts_the_same_and_is_not_resumed(tmp_path, trained, tiny_bert):
    root, summary = trained
    checkpoint = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    old = tmp_path / "old.ckpt"
    torch.save(first_layout(checkpoint, tiny_bert), old)
    current, converted = Predictor.from_checkpoint(summary["best_checkpoint"]), Predictor.from_checkpoint(old)
    np.testing.assert_array_equal(converted.scores(TEXTS, precision="32-true"),
                                  current.scores(TEXTS, precision="32-true"))
    assert converted.thresholds == current.thresholds and converted.labels.names == current.labels.names
    assert converted.labels.counts is None  # the first layout did not store them
    assert read_checkpoint(old)[CHECKPOINT_KEY]["resumable"] is False
    cfg = compose_train(root, [*quick(tiny_bert, {}), f"ckpt_path={old}", "logger=none"])
    with pytest.raises(ConfigError, match="written by labelwise 0.1: it can be evaluated, predicted with and "
                                          "exported, but not resumed"):
        train(cfg)


def test_a_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path):
    path = tmp_path / "best.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 (torch.save's own error for an object it cannot pickle)
        AtomicCheckpointIO().save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt"]

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "summary.json") as temporary:
        temporary.write_text("{half")
        raise RuntimeError("killed")
    assert not (tmp_path / "summary.json").exists()
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "export") as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("parity failed")
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "export"]


def readable(path: Path) -> None:
    """Raises if a finished artifact is not whole."""
    if path.suffix == ".ckpt":
        read_checkpoint(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".npz":
        with np.load(path) as saved:
            [saved[key] for key in saved.files]
    elif path.suffix == ".png":
        from matplotlib.image import imread

        imread(path)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["checkpoint being written", "first checkpoint", "report", "3 s"])
def test_kill_9_at_any_moment_leaves_no_half_written_artifact(tmp_path, tiny_bert, moment):
    """A real training process killed with SIGKILL: every checkpoint, summary, figure and prediction file under its
    real name reads back whole (temporary files are hidden, named .<name>.<pid>.tmp.<ext>)."""
    paths = write_dataset(tmp_path, multilabel=True, rows=192)
    command = [sys.executable, "-m", "src.train", *on_tiny(tiny_bert, paths), *QUIET, "trainer.max_epochs=6",
               "callbacks.early_stopping=null", "logger=csv", "hydra.run.dir=run"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "run"
    started = time.monotonic()
    try:
        while process.poll() is None and time.monotonic() - started < 120:
            checkpoints = [p.name for p in run.glob("checkpoints/*.ckpt")]
            if ((moment == "checkpoint being written" and any(name.startswith(".") for name in checkpoints))
                    or (moment == "first checkpoint" and any(not name.startswith(".") for name in checkpoints))
                    or (moment == "report" and (run / "report").exists())
                    or (moment.endswith(" s") and time.monotonic() - started > float(moment.split()[0]))):
                break
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    artifacts = [p for p in run.rglob("*") if p.is_file() and not p.name.startswith(".")]
    if moment in ("first checkpoint", "report"):
        assert any(p.suffix == ".ckpt" for p in artifacts)  # killed while there was something to corrupt
    for path in artifacts:
        readable(path)
