"""Real processes on one MLflow store: runs started at once on a fresh store all finish in their own run dirs, a run
killed with SIGKILL is marked KILLED when the next run starts (and a resume reopens it), SIGTERM and Ctrl-C end the
run FAILED with its error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from src.models.module import CHECKPOINT_KEY
from src.tracking.mlflow import HOST_TAG, KILLED_NOTE_TAG, PID_TAG
from src.train import train
from tests.helpers import ROOT, compose_train, quick, runs_in, write_dataset

pytestmark = pytest.mark.slow
SHORT = ["trainer.max_epochs=1", "report=false", "test=false"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    """``python -m src.train``; SIGINT back to its default first, as in a terminal: a shell's background job (a CI
    step run with ``&``) starts with SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "src.train", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path_glob: str, root: Path, process: subprocess.Popen, seconds: float = 120) -> Path:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [p for p in root.glob(path_glob) if not p.name.startswith(".")]
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError(f"no {path_glob} under {root} after {seconds} s")


def test_runs_started_at_once_on_a_fresh_store_all_finish_in_their_own_dirs(tmp_path, tiny_bert):
    """Before: the runs shared one run dir (same second) and raced to create the SQLite store
    (``table logged_models already exists``): 2 of 3 lost."""
    paths = write_dataset(tmp_path, multilabel=True)
    processes = [start(tmp_path, *quick(tiny_bert, paths, *SHORT)) for _ in range(3)]
    results = [process.communicate(timeout=300) for process in processes]
    for process, (_, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]

    summaries = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("outputs/*/*/summary.json"))]
    assert len({s["output_dir"] for s in summaries}) == 3
    run_ids = {s["mlflow"]["run_id"] for s in summaries}
    runs = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert {r.info.run_id for r in runs} == run_ids and len(run_ids) == 3
    assert [r.info.status for r in runs] == ["FINISHED"] * 3
    assert {r.data.tags[PID_TAG] for r in runs} == {str(p.pid) for p in processes}
    for summary in summaries:  # each run's checkpoint carries its own run's id
        checkpoint = torch.load(summary["best_checkpoint"], weights_only=True, mmap=True)
        assert checkpoint[CHECKPOINT_KEY]["mlflow_run_id"] == summary["mlflow"]["run_id"]
    print(f"\nparallel start: 3 started, {len(summaries)} finished, {len(runs)} runs FINISHED")


def test_kill_9_sigterm_and_ctrl_c_on_one_store(tmp_path, tiny_bert):
    """Three trainings at once, each stopped mid-fit: SIGTERM and Ctrl-C end their runs FAILED with the error
    (SIGTERM: one line, exit 1; it used to exit 0); kill -9 leaves its run RUNNING until the next run starts on the
    store, which marks it KILLED; resuming it from its periodic checkpoint reopens and finishes the same run."""
    paths = write_dataset(tmp_path, multilabel=True)
    args = quick(tiny_bert, paths, "trainer.max_epochs=50", "report=false", "callbacks.early_stopping=null",
                 "callbacks.periodic_checkpoint.train_time_interval=0")  # still running when the signals come
    signals = {"kill -9": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "Ctrl-C": signal.SIGINT}
    processes = {name: start(tmp_path, *args) for name in signals}
    periodic = {}
    for name, process in processes.items():  # the run dir ends with the pid
        periodic[name] = wait_for(f"outputs/*/*-{process.pid}/checkpoints/periodic.ckpt", tmp_path, process)
    for name, process in processes.items():
        process.send_signal(signals[name])
    stderr = {name: process.communicate(timeout=120)[1] for name, process in processes.items()}
    store = tmp_path / "outputs" / "mlflow.db"
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    runs = {r.data.tags[PID_TAG]: r for r in runs_in(store)}
    run = {name: runs[str(process.pid)] for name, process in processes.items()}

    assert processes["SIGTERM"].returncode == 1 and run["SIGTERM"].info.status == "FAILED"
    assert "Traceback" not in stderr["SIGTERM"] and stderr["SIGTERM"].count("error: stopped by SIGTERM") == 1
    assert error_of(client, run["SIGTERM"], tmp_path).startswith("error: stopped by SIGTERM. Resume with ckpt_path=")
    assert processes["Ctrl-C"].returncode == 1 and run["Ctrl-C"].info.status == "FAILED"
    assert "KeyboardInterrupt" in error_of(client, run["Ctrl-C"], tmp_path) + stderr["Ctrl-C"]
    assert run["kill -9"].info.status == "RUNNING" and run["kill -9"].data.tags[HOST_TAG]  # nothing could end it

    train(compose_train(tmp_path, quick(tiny_bert, paths, *SHORT)))  # another run starts on the store
    killed = client.get_run(run["kill -9"].info.run_id)
    assert killed.info.status == "KILLED"
    assert f"process {processes['kill -9'].pid} on " in killed.data.tags[KILLED_NOTE_TAG]
    assert client.get_run(run["SIGTERM"].info.run_id).info.status == "FAILED"  # ended runs are left alone

    cfg = compose_train(tmp_path, [f"ckpt_path={periodic['kill -9']}", "trainer.max_epochs=1", "report=false"])
    cfg.paths.output_dir = str(tmp_path / "resumed")
    train(cfg)
    reopened = client.get_run(killed.info.run_id)  # the same run, reopened and ended
    assert reopened.info.status == "FINISHED" and reopened.data.tags[PID_TAG] == str(os.getpid())


def error_of(client, run, directory: Path) -> str:
    return Path(client.download_artifacts(run.info.run_id, "error.txt", str(directory))).read_text()
