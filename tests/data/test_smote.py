"""sampler=smote: MLSMOTE (multi-label) and SMOTE (multi-class) checked against brute-force references."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from hydra.utils import instantiate

from src.data.smote import SmoteResampler, imbalance_ratios, minority_labels
from src.errors import ConfigError
from src.labels import LabelSpace
from tests.helpers import compose_train


def multilabel_data(rows: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous features; label frequencies 50% ... 5%: labels 3, 4 and 5 (IRLbl 5 to 10) are minority labels."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 4)).astype(np.float32)
    targets = (rng.random((rows, 6)) < [0.5, 0.4, 0.3, 0.1, 0.08, 0.05]).astype(np.float32)
    targets[targets.sum(axis=1) == 0, 0] = 1.0
    return features, targets


def nearest_with_label(features: np.ndarray, targets: np.ndarray, row: int, label: int, k: int) -> np.ndarray:
    """The ``k`` rows nearest to ``row`` among the other rows carrying ``label`` (brute force)."""
    bag = np.flatnonzero(targets[:, label] > 0)
    bag = bag[bag != row]
    distances = np.linalg.norm(features[bag] - features[row], axis=1)
    return bag[np.argsort(distances, kind="stable")[:k]]


def on_segment(point: np.ndarray, start: np.ndarray, end: np.ndarray, tol: float = 1e-4) -> bool:
    """Whether ``point = start + u (end - start)`` for some ``u`` in [0, 1]."""
    direction = end - start
    u = float(np.dot(point - start, direction) / max(np.dot(direction, direction), 1e-12))
    return -tol <= u <= 1 + tol and np.linalg.norm(start + u * direction - point) < tol


# ---------------------------------------------------------------- MLSMOTE


def multi_hot(counts: list[int]) -> np.ndarray:
    targets = np.zeros((max(counts), len(counts)), dtype=np.float32)
    for label, count in enumerate(counts):
        targets[:count, label] = 1.0
    return targets


def test_imbalance_ratios_and_mean_ir_by_hand():
    # positives 6, 3, 2, 0 -> IRLbl 1, 2, 3 (none for the empty label); MeanIR 2: only IRLbl 3 exceeds it
    targets = multi_hot([6, 3, 2, 0])
    ratios = imbalance_ratios(targets)
    assert ratios[:3].tolist() == [1.0, 2.0, 3.0] and np.isnan(ratios[3])
    assert minority_labels(targets).tolist() == [2]
    # positives 12, 6, 4, 1 -> IRLbl 1, 2, 3, 12; MeanIR 4.5 (the median, 2.5, would also take label 2)
    assert minority_labels(multi_hot([12, 6, 4, 1])).tolist() == [3]


def test_mlsmote_rows_interpolate_real_neighbours_with_ranked_label_sets():
    features, targets = multilabel_data()
    k = 3
    out_x, out_y = SmoteResampler(k_neighbors=k, ratio=1.0, max_new=1.0, seed=0).resample_features(
        features, targets, multilabel(targets))

    assert np.array_equal(out_x[: len(features)], features) and np.array_equal(out_y[: len(targets)], targets)
    synthetic_x, synthetic_y = out_x[len(features):], out_y[len(targets):]
    assert len(synthetic_x) > 0
    assert set(np.unique(synthetic_y).tolist()) <= {0.0, 1.0} and (synthetic_y.sum(axis=1) >= 1).all()
    minority = minority_labels(targets)
    for x, y in zip(synthetic_x, synthetic_y):
        # some seed row of a minority label the row carries, and one of its k nearest rows with that label
        matches = [
            (row, neighbours)
            for label in minority if y[label]
            for row in np.flatnonzero(targets[:, label] > 0)
            for neighbours in [nearest_with_label(features, targets, row, label, k)]
            if any(on_segment(x, features[row], features[other]) for other in neighbours)
        ]
        assert matches, "a synthetic row is not between a seed and one of its k nearest same-label neighbours"
        # ranking rule: the labels held by more than half of the seed and its k neighbours
        assert any(np.array_equal(y, (targets[[row, *neighbours]].sum(axis=0) > (k + 1) / 2).astype(np.float32))
                   for row, neighbours in matches)


def test_mlsmote_raises_only_minority_labels_up_to_the_caps():
    features, targets = multilabel_data()
    before = targets.sum(axis=0)
    minority = minority_labels(targets)
    assert len(minority) >= 1 and 0 not in minority

    _, capped = SmoteResampler(k_neighbors=3, ratio=1.0, max_new=1.0, seed=0).resample_features(
        features, targets, multilabel(targets))
    new = capped[len(targets):]
    # one synthetic row per seed and minority label (max_new=1): every new row belongs to some minority label
    expected = sum(min(int(before[label]), math.ceil(before.max()) - int(before[label])) for label in minority)
    assert len(new) == expected
    after = capped.sum(axis=0)
    for label in minority:
        assert after[label] >= 2 * before[label]  # each seed added a row that keeps its minority label

    _, uncapped = SmoteResampler(k_neighbors=3, ratio=0.5, max_new=None, seed=0).resample_features(
        features, targets, multilabel(targets))
    goal = math.ceil(0.5 * before.max())
    for label in minority:
        assert uncapped[:, label].sum() >= goal


def test_mlsmote_is_deterministic_by_seed():
    features, targets = multilabel_data()
    space = multilabel(targets)
    first, again, other = (SmoteResampler(k_neighbors=3, seed=seed).resample_features(features, targets, space)
                           for seed in (1, 1, 2))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_mlsmote_small_minority_labels_use_fewer_neighbours_or_are_skipped(caplog):
    features = np.arange(40, dtype=np.float32).reshape(20, 2)
    targets = np.zeros((20, 5), dtype=np.float32)
    targets[:, [0, 3, 4]] = 1.0  # IRLbl 1, 20/3, 20, 1, 1: MeanIR 5.9, so labels 1 and 2 are minority labels
    targets[:3, 1] = 1.0  # 3 rows: 2 neighbours instead of 5
    targets[5, 2] = 1.0  # 1 row: nothing to interpolate with
    with caplog.at_level(logging.WARNING, logger="src.data.smote"):
        out_x, out_y = SmoteResampler(k_neighbors=5, seed=0).resample_features(
        features, targets, multilabel(targets))
    assert "label 1 has only 3 training rows: 2 neighbours instead of 5" in caplog.text
    assert "label 2 has a single training row" in caplog.text
    new = out_y[len(targets):]
    assert len(new) == 3 and (new[:, 1] == 1).all() and (new[:, 2] == 0).all()


# ---------------------------------------------------------------- SMOTE (multi-class)


def multilabel(targets: np.ndarray) -> LabelSpace:
    return LabelSpace("multilabel", tuple(str(i) for i in range(targets.shape[1])))


def multiclass(num_classes: int) -> LabelSpace:
    return LabelSpace("multiclass", tuple(str(i) for i in range(num_classes)))


def multiclass_data(counts=(40, 10, 4), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    classes = np.repeat(np.arange(len(counts)), counts)
    return (rng.normal(size=(len(classes), 3)) + classes[:, None]).astype(np.float32), classes


def test_smote_hits_the_target_counts_with_points_between_same_class_rows():
    features, classes = multiclass_data()
    smote = SmoteResampler(k_neighbors=3, ratio=0.5, max_new=None, seed=0)
    out_x, out_one_hot = smote.resample_features(features, np.eye(3)[classes], multiclass(3))
    assert set(out_one_hot.sum(1).tolist()) == {1.0}  # new rows are one-hot too
    out_y = out_one_hot.argmax(1)
    assert np.bincount(out_y).tolist() == [40, 20, 20]  # every class raised to ceil(0.5 * 40)
    assert np.array_equal(out_x[: len(features)], features)
    for x, label in zip(out_x[len(features):], out_y[len(features):]):
        same = features[classes == label]
        assert any(on_segment(x, a, b) for a in same for b in same), "a synthetic point is off every same-class segment"


def test_smote_caps_and_small_classes(caplog):
    features, classes = multiclass_data(counts=(40, 10, 3, 1))
    with caplog.at_level(logging.WARNING, logger="src.data.smote"):
        _, out = SmoteResampler(k_neighbors=5, ratio=1.0, max_new=1.0, seed=0).resample_features(
            features, np.eye(4)[classes], multiclass(4))
    assert np.bincount(out.argmax(1)).tolist() == [40, 20, 6, 1]  # at most doubled; the single row left alone
    assert "class 2 has only 3 training rows" in caplog.text and "class 3 has a single training row" in caplog.text


@pytest.mark.parametrize("kwargs", [{"k_neighbors": 0}, {"ratio": 0}, {"ratio": 1.5}, {"max_new": 0}])
def test_smote_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        SmoteResampler(**kwargs)


def test_smote_config_instantiates(tmp_path):
    sampler = instantiate(compose_train(tmp_path, ["sampler=smote", "seed=7"]).data.sampler)
    assert isinstance(sampler, SmoteResampler) and sampler.seed == 7 and sampler.k_neighbors == 5
    assert not hasattr(sampler, "resample_indices")  # so TextDataModule refuses it with a text model
