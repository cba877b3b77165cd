"""`python -m src.eval`: a checkpoint scored on its own test split and on a new file, logged as a linked run."""

from __future__ import annotations

import csv
import json

import mlflow
import pytest

from src.train import train
from tests.helpers import compose_train, quick, run_cli, write_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    directory = tmp_path_factory.mktemp("trained")
    paths = write_dataset(directory, multilabel=True)
    summary = train(compose_train(directory, quick(tiny_bert, paths, "trainer.max_epochs=2")))
    return directory, paths, summary


def test_eval_on_the_checkpoints_own_test_split_matches_training(trained):
    directory, _, summary = trained
    output = run_cli(directory, f"ckpt_path={summary['best_checkpoint']}", "hydra.run.dir=eval1", module="src.eval")
    result = json.loads((directory / "eval1" / "summary.json").read_text())  # the path the printed summary names
    assert f"{directory / 'eval1'}/summary.json" in output.stdout.replace("\n", "")
    test = result["metrics"]["test"]
    for key in ("macro_f1", "macro_f1_tuned", "micro_f1_tuned", "macro_f1_ci95"):  # the same pass as training's test
        assert test[key] == pytest.approx(summary["metrics"]["test"][key], abs=1e-6), key
    assert (directory / "eval1" / "report" / "test" / "per_label.csv").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{directory}/outputs/mlflow.db")
    run = client.get_run(result["mlflow"]["run_id"])
    assert run.data.tags["labelwise.training_run_id"] == summary["mlflow"]["run_id"]
    assert run.data.metrics["test/macro_f1_tuned"] == pytest.approx(test["macro_f1_tuned"])


def test_eval_on_a_file_never_seen_in_training(trained):
    directory, paths, _ = trained
    new = directory / "new.jsonl"
    new.write_text('{"text": "sunny party", "labels": ["joy"]}\n{"text": "dark and scary", "labels": ["fear"]}\n')
    run_cli(directory, f"ckpt_path={trained[2]['best_checkpoint']}", "data=jsonl", f"data.source.train={new}",
            "split=train", "hydra.run.dir=eval2", module="src.eval")
    with (directory / "eval2" / "report" / "train" / "per_label.csv").open() as handle:
        support = {row["label"]: int(row["support"]) for row in csv.DictReader(handle)}
    assert support == {"anger": 0, "fear": 1, "joy": 1}  # read against the model's vocabulary, in its order


@pytest.mark.parametrize(("args", "expected"), [
    (["ckpt_path=nowhere.ckpt"], "nowhere.ckpt: no such file"),
    (["split=val"], "ckpt_path is required"),
])
def test_eval_bad_input_is_one_clear_message(tmp_path, args, expected):
    result = run_cli(tmp_path, *args, module="src.eval", check=False)
    assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr
