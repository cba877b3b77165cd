"""`python -m src.eval`: a checkpoint scored on its own test split and on a new file, logged as a linked run."""

from __future__ import annotations

import csv
import json

import mlflow
import pytest

from src.train import train
from tests.conftest import compose_train
from tests.test_cli import run_cli
from tests.test_train import quick, write_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    directory = tmp_path_factory.mktemp("trained")
    paths = write_dataset(directory, multilabel=True)
    summary = train(compose_train(directory, quick(tiny_bert, paths, "trainer.max_epochs=2")))
    return directory, paths, summary


def test_eval_on_the_checkpoints_own_test_split_matches_training(trained):
    directory, _, summary = trained
    run_cli(directory, f"ckpt_path={summary['best_checkpoint']}", "hydra.run.dir=eval1", module="src.eval")
    result = json.loads((directory / "eval1" / "eval_summary.json").read_text())
    test = result["metrics"]["test"]
    assert test["macro_f1_tuned"] == pytest.approx(summary["metrics"]["test"]["macro_f1_tuned"], abs=1e-6)
    assert (directory / "eval1" / "report" / "per_label.csv").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{directory}/outputs/mlflow.db")
    run = client.get_run(result["mlflow"]["run_id"])
    assert run.data.tags["labelwise.training_run_id"] == summary["mlflow"]["run_id"]
    assert run.data.metrics["test/macro_f1_tuned"] == pytest.approx(test["macro_f1_tuned"])


def test_eval_on_a_file_never_seen_in_training(trained):
    directory, paths, _ = trained
    new = directory / "new.jsonl"
    new.write_text('{"text": "sunny party", "labels": ["joy"]}\n{"text": "dark and scary", "labels": ["fear"]}\n')
    run_cli(directory, f"ckpt_path={trained[2]['best_checkpoint']}", "data=jsonl", f"data.train={new}", "split=train",
            "hydra.run.dir=eval2", module="src.eval")
    with (directory / "eval2" / "report" / "per_label.csv").open() as handle:
        support = {row["label"]: int(row["support"]) for row in csv.DictReader(handle)}
    assert support == {"anger": 0, "fear": 1, "joy": 1}  # read against the model's vocabulary, in its order


@pytest.mark.parametrize(("args", "expected"), [
    (["ckpt_path=nowhere.ckpt"], "nowhere.ckpt: no such file"),
    (["split=val"], "ckpt_path is required"),
])
def test_eval_bad_input_is_one_clear_message(tmp_path, args, expected):
    result = run_cli(tmp_path, *args, module="src.eval", check=False)
    assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr
