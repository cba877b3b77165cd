"""k-fold cross-validation: folds against the stratifiers' own output, the aggregation against a hand computation,
and a real 3-fold run with its MLflow parent, out-of-fold scores and the fold ensemble."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import StratifiedKFold

from src.compare import compare
from src.cv import cross_validate
from src.data.records import LabelledData, Split
from src.data.sources.folds import FoldSource, development_rows, fold_of_each_row
from src.errors import ConfigError
from tests.helpers import compose_train, quick, write_dataset


def dataset(multilabel: bool, rows: int = 300, seed: int = 0) -> LabelledData:
    rng = np.random.default_rng(seed)
    if multilabel:
        labels = [sorted(set(rng.choice(4, size=rng.integers(1, 3), p=[0.5, 0.3, 0.15, 0.05]).tolist()))
                  for _ in range(rows)]
    else:
        labels = [[int(c)] for c in rng.choice(4, size=rows, p=[0.5, 0.3, 0.15, 0.05])]
    texts = [f"row {i}" for i in range(rows)]
    cut = rows * 4 // 5
    splits = {"train": Split(texts[:cut], labels[:cut]), "val": Split(texts[cut:], labels[cut:]),
              "test": Split(["held out"], [[0]])}
    return LabelledData(splits, list("abcd"), "multilabel" if multilabel else "multiclass")


class Fixed:
    def __init__(self, data):
        self.data = data

    def load(self):
        return self.data


@pytest.mark.parametrize("multilabel", [True, False], ids=["multilabel", "multiclass"])
def test_folds_are_the_stratifiers_disjoint_cover_and_keep_proportions(multilabel):
    data = dataset(multilabel)
    assignment = fold_of_each_row(data, 5, seed=3)
    targets = data.label_space.targets(development_rows(data).labels)
    splitter = (MultilabelStratifiedKFold(n_splits=5, shuffle=True, random_state=3) if multilabel
                else StratifiedKFold(n_splits=5, shuffle=True, random_state=3))
    reference = splitter.split(np.zeros(len(targets)), targets if multilabel else targets.argmax(1))
    for fold, (_, held_out) in enumerate(reference):
        assert np.array_equal(np.flatnonzero(assignment == fold), np.sort(held_out))
    assert len(assignment) == 300 and set(assignment.tolist()) == set(range(5))  # every dev row in exactly one fold
    for fold in range(5):  # stratified: each fold holds a fifth of every label's rows, give or take a row or two
        assert np.abs(targets[assignment == fold].sum(0) - targets.sum(0) / 5).max() <= 2
    fold = FoldSource(Fixed(data), folds=5, fold=2, seed=3).load()
    assert len(fold.splits["val"]) == (assignment == 2).sum() and len(fold.splits["train"]) == (assignment != 2).sum()
    assert set(fold.splits["val"].texts).isdisjoint(fold.splits["train"].texts)
    assert fold.splits["test"].texts == ["held out"]


def test_bad_fold_counts_name_the_problem():
    data = dataset(multilabel=True, rows=60)
    with pytest.raises(ConfigError, match="cv.folds=1: cross-validation needs at least 2 folds"):
        fold_of_each_row(data, 1, seed=0)
    rare = sum(1 for ids in development_rows(data).labels if 3 in ids)
    with pytest.raises(ConfigError, match=rf"fewer rows than folds: d \({rare} rows\)"):
        fold_of_each_row(data, rare + 1, seed=0)
    with pytest.raises(ConfigError, match="cv.fold=5: folds are numbered 0 to 4"):
        FoldSource(Fixed(data), folds=5, fold=5, seed=0)


@pytest.fixture(scope="module")
def three_folds(tmp_path_factory, tiny_bert):
    directory = tmp_path_factory.mktemp("cv")
    paths = write_dataset(directory, multilabel=True)
    cfg = compose_train(directory, quick(tiny_bert, paths, "trainer.max_epochs=1", "cv.folds=3"))
    return directory, cross_validate(cfg)


def test_three_folds_aggregate_as_a_hand_computation(three_folds):
    directory, result = three_folds
    folds = [json.loads((directory / "run" / f"fold{i}" / "summary.json").read_text()) for i in range(3)]
    for split in ("val", "test"):
        for name in ("macro_f1", "macro_f1_tuned", "loss"):
            values = [f["metrics"][split][name] for f in folds]
            assert result["metrics"][split][name] == pytest.approx(np.mean(values))
            assert result["metrics"][split][f"{name}_std"] == pytest.approx(np.std(values, ddof=1))
    assert result["optimized_metric"]["value"] == pytest.approx(np.mean([f["metrics"]["val"]["macro_f1"]
                                                                         for f in folds]))
    # out of fold: every development row (96 train + 32 val) scored by the fold model that held it out
    oof = np.load(directory / "run" / "oof_predictions.npz")
    assert oof["scores"].shape == (128, 3) and sorted(set(oof["fold"].tolist())) == [0, 1, 2]
    for i in range(3):
        with np.load(directory / "run" / f"fold{i}" / "report" / "predictions_val.npz") as saved:
            assert np.array_equal(oof["scores"][oof["fold"] == i], saved["scores"])
            assert np.array_equal(oof["targets"][oof["fold"] == i], saved["targets"])
    assert {"macro_f1_tuned", "macro_f1_tuned_crossfit"} <= set(result["metrics"]["oof"])
    # the fold ensemble: the three models' test scores averaged
    tests = [np.load(directory / "run" / f"fold{i}" / "report" / "predictions_test.npz")["scores"] for i in range(3)]
    from src.labels import LabelSpace
    from src.metrics.classification import full_metrics

    space = LabelSpace.from_dict(json.loads(str(np.load(directory / "run" / "oof_predictions.npz")["labels"])))
    targets = np.load(directory / "run" / "fold0" / "report" / "predictions_test.npz")["targets"]
    expected = full_metrics(space, np.mean(tests, axis=0), targets)["macro_f1"]
    assert result["metrics"]["ensemble_test"]["macro_f1"] == pytest.approx(expected)


def test_each_fold_is_a_child_run_and_compare_pairs_folds(three_folds):
    directory, result = three_folds
    client = mlflow.MlflowClient(result["mlflow"]["tracking_uri"])
    parent = client.get_run(result["mlflow"]["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["labelwise.cv_folds"] == "3"
    assert parent.data.metrics["val/macro_f1"] == pytest.approx(result["metrics"]["val"]["macro_f1"])
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(run.data.tags["labelwise.fold"] for run in children) == ["0", "1", "2"]
    assert sorted(run.info.run_id for run in children) == sorted(result["fold_runs"])
    ranked = compare(result["mlflow"]["tracking_uri"], parent.info.run_id, "val/macro_f1")
    assert [(g.name, g.n) for g in ranked.groups] == [("all", 3)]
    assert sorted(ranked.groups[0].values) == ["fold0", "fold1", "fold2"]
