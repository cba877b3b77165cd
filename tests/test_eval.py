"""`python -m src.eval`: a checkpoint scored on its own test split and on a new file, logged as a linked run."""

from __future__ import annotations

import csv
import json
import re

import mlflow
import numpy as np
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


def compose_eval(directory, *overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from tests.helpers import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.root_dir = str(directory)
        cfg.paths.output_dir = str(directory / "eval_override")
    return cfg


def top_two(scores: np.ndarray) -> np.ndarray:
    """Each row's two highest scores, equal scores (bf16 logits make them) going to the lower label index."""
    chosen = np.zeros(scores.shape, dtype=bool)
    for row, values in enumerate(scores):
        chosen[row, sorted(range(len(values)), key=lambda j: (-values[j], j))[:2]] = True
    return chosen


@pytest.mark.parametrize(("value", "rule"), [
    ("0.3", lambda scores: scores > 0.3),
    ("[0.2,0.9,0.5]", lambda scores: scores > np.array([0.2, 0.9, 0.5])),
    ("{top_k:2}", lambda scores: top_two(scores)),
], ids=["one", "per-label", "top-k"])
def test_eval_and_predict_with_thresholds_given_on_the_command_line(trained, value, rule):
    """``thresholds=`` replaces the stored ones in eval's metrics and predict's labels: both recomputed here
    from the scores with numpy and sklearn."""
    from sklearn.metrics import f1_score

    from src.eval import evaluate_checkpoint
    from src.inference import Predictor
    from src.predict import plain

    directory, paths, summary = trained
    cfg = compose_eval(directory, f"ckpt_path={summary['best_checkpoint']}", f"thresholds={value}")
    result = evaluate_checkpoint(cfg)
    saved = np.load(directory / "eval_override" / "report" / "predictions_test.npz")
    decided = rule(saved["scores"].astype(np.float64))
    assert np.array_equal(saved["predictions"].astype(bool), decided)
    assert result["metrics"]["test"]["macro_f1_tuned"] == pytest.approx(
        f1_score(saved["targets"], decided, average="macro", zero_division=0), abs=1e-9)
    assert result["thresholds"]["policy"].startswith(("fixed=", "top_k="))

    predictor = Predictor.from_checkpoint(summary["best_checkpoint"])
    predictor.use_thresholds(plain(cfg.thresholds))
    texts = [json.loads(line)["text"] for line in paths["test"].read_text().splitlines()]
    records = predictor.predict(texts)
    scores = np.array([[record["scores"][name] for name in summary["label_names"]] for record in records])
    expected = rule(scores)
    for record, row in zip(records, expected):
        assert record["labels"] == [name for name, chosen in zip(summary["label_names"], row) if chosen]


@pytest.mark.parametrize(("value", "expected"), [
    ("[0.2,0.5]", "a list of 3"), ("1.5", "one threshold in [0, 1]"), ("{top_k:3}", "from 1 to 2"),
    ("{k:2}", "only dict form"), ("abc", "one threshold in [0, 1]"),
])
def test_bad_threshold_overrides_are_one_clear_message(trained, value, expected):
    from src.errors import ConfigError
    from src.eval import evaluate_checkpoint

    directory, _, summary = trained
    with pytest.raises(ConfigError, match=re.escape(expected)):
        evaluate_checkpoint(compose_eval(directory, f"ckpt_path={summary['best_checkpoint']}", f"thresholds={value}"))


def test_eval_on_the_runs_own_val_split_reports_the_cross_fitted_estimate(trained):
    """The stored thresholds were tuned on these rows, so macro_f1_tuned is in-sample: the cross-fitted number must be
    there, equal to the one the training run computed on the same scores; on a new file or with thresholds= given,
    nothing was tuned on the rows and there is none."""
    directory, paths, summary = trained
    output = run_cli(directory, f"ckpt_path={summary['best_checkpoint']}", "split=val", "hydra.run.dir=eval-val",
                     module="src.eval")
    val = json.loads((directory / "eval-val" / "summary.json").read_text())["metrics"]["val"]
    trained_val = summary["metrics"]["val"]
    assert val["macro_f1_tuned"] == pytest.approx(trained_val["macro_f1_tuned"], abs=1e-6)
    assert val["macro_f1_tuned_crossfit"] == pytest.approx(trained_val["macro_f1_tuned_crossfit"], abs=1e-6)
    assert "thresholds tuned on one half and scored on the other" in output.stdout.replace("\n", " ")
    for extra in (["thresholds=0.3"], ["data=jsonl", f"data.source.train={paths['train']}",
                                        f"data.source.val={paths['val']}"]):
        run_cli(directory, f"ckpt_path={summary['best_checkpoint']}", "split=val", *extra, "hydra.run.dir=eval-other",
                module="src.eval")
        other = json.loads((directory / "eval-other" / "summary.json").read_text())["metrics"]["val"]
        assert "macro_f1_tuned_crossfit" not in other, extra


def test_eval_split_val_carves_the_runs_validation_rows_again(tmp_path, tiny_bert):
    """A source without a validation file: the run carved val from train (its fraction, its seed), and eval carves
    the same rows again, so its numbers on them are training's."""
    paths = write_dataset(tmp_path, multilabel=True)
    del paths["val"]
    summary = train(compose_train(tmp_path, quick(tiny_bert, paths, "trainer.max_epochs=1", "seed=3")))
    run_cli(tmp_path, f"ckpt_path={summary['best_checkpoint']}", "split=val", "hydra.run.dir=eval-carved",
            module="src.eval")
    val = json.loads((tmp_path / "eval-carved" / "summary.json").read_text())["metrics"]["val"]
    for key in ("macro_f1", "macro_f1_tuned", "macro_f1_tuned_crossfit"):
        assert val[key] == pytest.approx(summary["metrics"]["val"][key], abs=1e-6), key
