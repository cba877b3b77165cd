"""carve_validation: disjoint, complete, reproducible, stratified."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from src.data.records import LabelledData, Split
from src.data.splitting import carve_validation
from src.errors import DataError


def multilabel_data(rows: int = 600, seed: int = 0) -> LabelledData:
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.5, 0.3, 0.15, 0.08, 0.04])
    hot = rng.random((rows, len(prevalence))) < prevalence
    labels = [np.flatnonzero(row).tolist() for row in hot]
    test = Split(["held out"], [[0]])
    train = Split([f"text {i}" for i in range(rows)], labels, [f"train.jsonl:{i + 1}" for i in range(rows)])
    return LabelledData(
        {"train": train, "test": test}, [f"l{i}" for i in range(len(prevalence))], "multilabel"
    )


def multiclass_data() -> LabelledData:
    labels = [[0]] * 300 + [[1]] * 150 + [[2]] * 50 + [[3]]  # class 3 has a single record
    texts = [f"text {i}" for i in range(len(labels))]
    return LabelledData({"train": Split(texts, labels)}, ["a", "b", "c", "d"], "multiclass")


def rates(data: LabelledData, split: str) -> np.ndarray:
    return data.label_counts(split) / len(data.splits[split])


@pytest.mark.parametrize("make", [multilabel_data, multiclass_data], ids=["multilabel", "multiclass"])
def test_parts_are_disjoint_and_cover_train(make) -> None:
    data = make()
    carved = carve_validation(data, 0.2, seed=7)
    train, val = carved.splits["train"], carved.splits["val"]
    assert set(train.texts).isdisjoint(val.texts)
    assert sorted(train.texts + val.texts) == sorted(data.splits["train"].texts)
    assert abs(len(val) - 0.2 * len(data.splits["train"])) <= 2
    by_text = dict(zip(data.splits["train"].texts, data.splits["train"].labels))
    assert all(by_text[text] == ids for text, ids in zip(val.texts, val.labels))


def test_origins_follow_their_records() -> None:
    carved = carve_validation(multilabel_data(), 0.1, seed=0)
    val = carved.splits["val"]
    assert [o.split(":")[1] for o in val.origin] == [str(int(t.split()[1]) + 1) for t in val.texts]


@pytest.mark.parametrize("make", [multilabel_data, multiclass_data], ids=["multilabel", "multiclass"])
def test_same_seed_same_split_other_seed_other_split(make) -> None:
    first = carve_validation(make(), 0.2, seed=1).splits["val"].texts
    again = carve_validation(make(), 0.2, seed=1).splits["val"].texts
    other = carve_validation(make(), 0.2, seed=2).splits["val"].texts
    assert first == again
    assert first != other


def test_multilabel_val_keeps_label_proportions() -> None:
    carved = carve_validation(multilabel_data(rows=2000), 0.2, seed=3)
    np.testing.assert_allclose(rates(carved, "val"), rates(carved, "train"), atol=0.005)
    assert carved.label_counts("val").min() > 0


def test_multiclass_val_keeps_class_proportions_and_singletons_stay_in_train() -> None:
    carved = carve_validation(multiclass_data(), 0.2, seed=3)
    assert "text 500" in carved.splits["train"].texts  # the only record of class 3
    assert carved.label_counts("val")[3] == 0
    np.testing.assert_allclose(rates(carved, "val")[:3], [300 / 501, 150 / 501, 50 / 501], atol=0.01)


def test_other_splits_are_kept() -> None:
    carved = carve_validation(multilabel_data(), 0.1, seed=0)
    assert list(carved.splits) == ["train", "val", "test"]
    assert carved.splits["test"].texts == ["held out"]
    assert carved.label_names == ["l0", "l1", "l2", "l3", "l4"]
    assert carved.task == "multilabel"


def test_existing_validation_split_is_returned_unchanged() -> None:
    data = multilabel_data()
    data.splits["val"] = Split(["given"], [[1]])
    assert carve_validation(data, 0.2, seed=0) is data


def test_the_carve_is_logged(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="src.data.splitting"):
        carve_validation(multilabel_data(rows=500), 0.1, seed=42)
    assert caplog.messages == ["no validation split: carved 10% (50 rows) of train, stratified, seed 42"]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_must_be_strictly_between_0_and_1(fraction: float) -> None:
    with pytest.raises(DataError, match="between 0 and 1"):
        carve_validation(multilabel_data(), fraction, seed=0)


def test_too_few_rows_to_stratify_is_a_data_error() -> None:
    data = LabelledData(
        {"train": Split(["a", "b", "c", "d"], [[0], [0], [1], [1]])}, ["x", "y"], "multiclass"
    )
    with pytest.raises(DataError, match="4 train rows"):
        carve_validation(data, 0.2, seed=0)
