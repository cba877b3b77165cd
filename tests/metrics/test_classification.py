"""The label space's scores and decisions, the confusion counts and the headline metrics, against scikit-learn and
hand-worked cases, for numpy arrays and torch tensors alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score, hamming_loss

from src.errors import ConfigError, DataError
from src.labels import LabelSpace
from src.metrics.classification import bucket_macro_f1, decision_metrics
from src.metrics.counts import Counts, confusion
from src.metrics.thresholds import Thresholds

MULTILABEL = LabelSpace("multilabel", ("a", "b", "c", "d", "e"))
MULTICLASS = LabelSpace("multiclass", tuple("abcdef"))


def sk_f1(targets, predictions, average):
    return f1_score(targets, predictions, average=average, zero_division=0)


# ---------------------------------------------------------------- scores and decisions


def test_multilabel_scores_are_sigmoids_for_numpy_and_torch():
    logits = np.array([[0.0, 2.0, -3.0], [10.0, -10.0, 0.5]])
    space = LabelSpace("multilabel", ("x", "y", "z"))
    expected = 1.0 / (1.0 + np.exp(-logits))
    np.testing.assert_allclose(space.scores(logits), expected, rtol=1e-12)
    got = space.scores(torch.tensor(logits, dtype=torch.bfloat16))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), 1.0 / (1.0 + np.exp(-torch.tensor(logits).bfloat16().float().numpy())),
                               rtol=1e-6)


def test_multiclass_scores_are_a_softmax():
    logits = np.array([[0.0, 2.0, -3.0], [30.0, -30.0, 0.5], [1.0, 1.0, 1.0]])
    space = LabelSpace("multiclass", ("x", "y", "z"))
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(space.scores(logits), softmax, rtol=1e-12)
    np.testing.assert_allclose(space.scores(torch.tensor(logits)).numpy(), softmax, rtol=1e-5, atol=1e-7)
    assert space.scores(logits)[2].tolist() == pytest.approx([1 / 3] * 3)


def test_multilabel_default_decision_is_strictly_above_one_half():
    """torchmetrics' rule: p > 0.5 (0.5 = sigmoid(0) is negative), for numpy and torch."""
    above = np.nextafter(0.5, 1.0)
    scores = np.array([[0.5, above, 0.2]])
    assert LabelSpace("multilabel", ("x", "y", "z")).decide(scores).tolist() == [[False, True, False]]
    assert LabelSpace("multilabel", ("x", "y", "z")).decide(torch.tensor(scores)).tolist() == [[False, True, False]]


def test_multilabel_decisions_with_thresholds_and_the_at_least_one_rule():
    space = LabelSpace("multilabel", ("x", "y", "z"))
    thresholds = Thresholds(0.5, [0.3, 0.6, 0.9], 0.0, at_least_one=True)
    scores = np.array([[0.31, 0.59, 0.95], [0.1, 0.2, 0.3], [0.3, 0.6, 0.9]])
    # row 2: nothing strictly above its threshold -> the top-scoring label (z at 0.9) by the at-least-one rule
    assert space.decide(scores, thresholds).astype(int).tolist() == [[1, 0, 1], [0, 0, 1], [0, 0, 1]]


def test_multiclass_decision_is_the_one_hot_argmax_and_refuses_thresholds():
    scores = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    space = LabelSpace("multiclass", ("x", "y", "z"))
    assert space.decide(scores).astype(int).tolist() == [[0, 1, 0], [1, 0, 0]]
    assert space.decide(torch.tensor(scores)).int().tolist() == [[0, 1, 0], [1, 0, 0]]
    tied = torch.full((1, 3), 1 / 3)  # a uniform softmax still gives exactly one decision
    assert space.decide(tied).sum().item() == 1
    with pytest.raises(ConfigError, match="multi-label models only"):
        space.decide(scores, Thresholds(0.5, [0.5] * 3, 0.0, False))


def test_targets_are_zero_one_rows_and_rows_are_checked():
    assert MULTICLASS.targets([[2], [0]]).tolist() == np.eye(6, dtype=np.float32)[[2, 0]].tolist()
    assert LabelSpace("multilabel", ("x", "y", "z")).targets([[0, 2], []]).tolist() == [[1, 0, 1], [0, 0, 0]]
    with pytest.raises(DataError, match="row 7: a multiclass record needs exactly one label"):
        MULTICLASS.check_row([1, 2], "row 7")
    with pytest.raises(DataError, match="outside 0..4"):
        MULTILABEL.check_row([5], "row 1")
    with pytest.raises(DataError, match="not unique"):
        LabelSpace("multilabel", ("a", "a"))


def test_label_space_round_trips_through_a_dict():
    space = LabelSpace("multiclass", ("x", "y"), (3, 4), 7)
    assert LabelSpace.from_dict(space.to_dict()) == space
    assert space.problem_type == "single_label_classification" and space.exclusive and not space.thresholded


# ---------------------------------------------------------------- counts


def test_counts_hand_worked_and_the_same_on_torch():
    # label 0: tp=2 fp=1 fn=0 -> F1 = 4/5; label 1: tp=1 fp=0 fn=1 -> 2/3; label 2: nothing -> 0
    targets = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0]], dtype=bool)
    decisions = np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=bool)
    counts = confusion(targets, decisions)
    assert (counts.tp.tolist(), counts.fp.tolist(), counts.fn.tolist()) == ([2, 1, 0], [1, 0, 0], [0, 1, 0])
    assert counts.numpy().f1().tolist() == pytest.approx([4 / 5, 2 / 3, 0.0])
    assert float(counts.numpy().micro_f1()) == pytest.approx(6 / 8)  # tp 3, fp 1, fn 1
    on_torch = confusion(torch.tensor(targets), torch.tensor(decisions)).numpy()
    assert on_torch.f1().tolist() == counts.numpy().f1().tolist()


def test_counts_summed_over_batches_equal_the_whole_epoch():
    rng = np.random.default_rng(0)
    targets, decisions = rng.random((60, 5)) < 0.3, rng.random((60, 5)) < 0.4
    whole = confusion(targets, decisions)
    parts = [confusion(t, d) for t, d in zip(np.array_split(targets, 4), np.array_split(decisions, 4))]
    total = parts[0] + parts[1] + parts[2] + parts[3]
    assert isinstance(total, Counts)
    assert (total.tp.tolist(), total.fp.tolist(), total.fn.tolist()) == (
        whole.tp.tolist(), whole.fp.tolist(), whole.fn.tolist())


def test_weighted_counts_equal_counts_of_the_drawn_rows():
    rng = np.random.default_rng(1)
    targets, decisions = rng.random((30, 4)) < 0.3, rng.random((30, 4)) < 0.4
    draws = [rng.integers(0, 30, size=30) for _ in range(3)]
    weights = np.stack([np.bincount(rows, minlength=30) for rows in draws]).astype(np.float32)
    batched = confusion(targets, decisions, weights)
    for b, rows in enumerate(draws):
        single = confusion(targets[rows], decisions[rows])
        assert batched.tp[b].tolist() == single.tp.tolist() and batched.fn[b].tolist() == single.fn.tolist()


# ---------------------------------------------------------------- headline metrics


def test_multilabel_headline_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    targets = rng.random((60, 5)) < 0.35
    targets[:, 4] = False  # no positives: sklearn (zero_division=0) counts its F1 as 0 in the macro
    decisions = rng.random((60, 5)) < 0.4
    decisions[:, 4] = False
    got = decision_metrics(MULTILABEL, targets, decisions)
    t, d = targets.astype(int), decisions.astype(int)
    assert got["macro_f1"] == pytest.approx(sk_f1(t, d, "macro"), abs=1e-12)
    assert got["micro_f1"] == pytest.approx(sk_f1(t, d, "micro"), abs=1e-12)
    assert got["weighted_f1"] == pytest.approx(sk_f1(t, d, "weighted"), abs=1e-12)
    assert got["samples_f1"] == pytest.approx(sk_f1(t, d, "samples"), abs=1e-12)
    assert got["exact_match"] == pytest.approx(accuracy_score(t, d), abs=1e-12)
    assert got["hamming_loss"] == pytest.approx(hamming_loss(t, d), abs=1e-12)
    assert "accuracy" not in got


def test_multiclass_headline_metrics_match_sklearn_and_macro_skips_absent_classes():
    rng = np.random.default_rng(2)
    true = rng.integers(0, 5, size=80)  # class 5 is never true ...
    predicted = np.where(rng.random(80) < 0.6, true, rng.integers(0, 5, size=80))  # ... and never predicted
    got = decision_metrics(MULTICLASS, np.eye(6, dtype=bool)[true], np.eye(6, dtype=bool)[predicted])
    assert got["macro_f1"] == pytest.approx(sk_f1(true, predicted, "macro"), abs=1e-12)  # over the 5 present
    assert got["macro_f1"] != pytest.approx(f1_score(true, predicted, labels=range(6), average="macro"), abs=1e-3)
    assert got["micro_f1"] == pytest.approx(accuracy_score(true, predicted), abs=1e-12)
    assert got["accuracy"] == got["exact_match"] == pytest.approx(accuracy_score(true, predicted), abs=1e-12)
    assert 0.0 < got["accuracy"] < 1.0


def test_frequency_buckets_are_thirds_by_training_count():
    space = LabelSpace("multilabel", tuple("abcdefg"), counts=(5, 90, 5, 40, 1, 300, 12))
    buckets = space.frequency_buckets()
    assert {k: v.tolist() for k, v in buckets.items()} == {"head": [1, 3, 5], "medium": [0, 6], "tail": [2, 4]}
    assert LabelSpace("multilabel", tuple("ab"), counts=(1, 2)).frequency_buckets() == {}
    assert LabelSpace("multilabel", tuple("abc")).frequency_buckets() == {}  # no training counts


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_bucket_macro_f1_matches_sklearn_on_each_bucket(task):
    rng = np.random.default_rng(8)
    counts = (50, 3, 20, 7, 90, 1)
    space = LabelSpace(task, tuple("abcdef"), counts=counts)
    if task == "multilabel":
        targets = rng.random((200, 6)) < 0.3
        decisions = np.where(rng.random(targets.shape) < 0.3, ~targets, targets)
    else:
        truth, guess = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
        guess = np.where(rng.random(200) < 0.5, truth, guess)
        guess[guess == 1] = 0  # class 1 (tail) is never predicted
        targets, decisions = np.eye(6, dtype=bool)[truth], np.eye(6, dtype=bool)[guess]
    expected = {}
    for bucket, labels in (("head", [4, 0]), ("medium", [2, 3]), ("tail", [1, 5])):  # 6 labels: thirds of 2
        if task == "multilabel":
            value = f1_score(targets[:, labels], decisions[:, labels], average="macro", zero_division=0)
        else:  # macro over the bucket's classes present in truth or decisions, as sklearn's default label set does
            present = [c for c in labels if targets[:, c].any() or decisions[:, c].any()]
            value = f1_score(targets.argmax(1), decisions.argmax(1), labels=present, average="macro", zero_division=0)
        expected[f"{bucket}_macro_f1"] = value
    assert bucket_macro_f1(space, targets, decisions) == pytest.approx(expected)
