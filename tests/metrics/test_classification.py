"""build_metrics and scores against scikit-learn and hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from src.metrics.classification import build_metrics, scores


def compute(task: str, num_labels: int, probs: np.ndarray, targets: np.ndarray, chunks: int = 1) -> dict:
    """Update in ``chunks`` batches (as over an epoch), then compute."""
    metrics = build_metrics(task, num_labels)
    for p, t in zip(np.array_split(probs, chunks), np.array_split(targets, chunks)):
        metrics.update(torch.tensor(p, dtype=torch.float32), torch.tensor(t).long())
    return {key: value.item() for key, value in metrics.compute().items()}


def sk_f1(targets, predictions, average):
    return f1_score(targets, predictions, average=average, zero_division=0)


# ---------------------------------------------------------------- multi-label


def test_build_metrics_keys():
    assert set(build_metrics("multilabel", 3).keys()) == {"macro_f1", "micro_f1"}
    assert set(build_metrics("multiclass", 3).keys()) == {"macro_f1", "micro_f1", "accuracy"}


@pytest.mark.parametrize("chunks", [1, 3])
def test_multilabel_f1_matches_sklearn(chunks):
    rng = np.random.default_rng(1)
    probs = rng.random((60, 5)).astype(np.float32)
    targets = (rng.random((60, 5)) < 0.35).astype(int)
    # label 4 has no positives and is never predicted: sklearn (zero_division=0) counts it as F1 = 0
    targets[:, 4] = 0
    probs[:, 4] = rng.random(60).astype(np.float32) * 0.4

    got = compute("multilabel", 5, probs, targets, chunks)

    predictions = (probs > 0.5).astype(int)
    assert predictions[:, :4].sum() > 0 and predictions[:, 4].sum() == 0
    assert got["macro_f1"] == pytest.approx(sk_f1(targets, predictions, "macro"), abs=1e-6)
    assert got["micro_f1"] == pytest.approx(sk_f1(targets, predictions, "micro"), abs=1e-6)
    # the empty label pulls the macro down by exactly 1/5 of the other labels' sum
    per_label = f1_score(targets, predictions, average=None, zero_division=0)
    assert per_label[4] == 0
    assert got["macro_f1"] == pytest.approx(per_label[:4].sum() / 5, abs=1e-6)


def test_multilabel_all_zero_predictions():
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    probs = np.full(targets.shape, 0.1, dtype=np.float32)
    got = compute("multilabel", 3, probs, targets)
    zeros = np.zeros_like(targets)
    assert sk_f1(targets, zeros, "macro") == 0 and sk_f1(targets, zeros, "micro") == 0
    assert got == {"macro_f1": 0.0, "micro_f1": 0.0}


def test_multilabel_hand_worked():
    # label 0: tp=2 fp=1 fn=0 -> F1 = 4/5; label 1: tp=1 fp=0 fn=1 -> 2/3; label 2: nothing -> 0
    targets = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0]])
    probs = np.array([[0.9, 0.8, 0.1], [0.7, 0.2, 0.3], [0.6, 0.4, 0.0]], dtype=np.float32)
    got = compute("multilabel", 3, probs, targets)
    assert got["macro_f1"] == pytest.approx((4 / 5 + 2 / 3 + 0) / 3, abs=1e-6)
    # micro: tp=3 fp=1 fn=1 -> 6 / 8
    assert got["micro_f1"] == pytest.approx(6 / 8, abs=1e-6)


def test_multilabel_threshold_is_strictly_greater_than():
    """torchmetrics predicts positive for p > threshold: 0.5 (exact in float32, = sigmoid(0)) is negative."""
    targets = np.array([[1, 1]])
    above = np.nextafter(np.float32(0.5), np.float32(1))
    at_half = compute("multilabel", 2, np.array([[0.5, 0.9]], dtype=np.float32), targets)
    just_above = compute("multilabel", 2, np.array([[above, 0.9]], dtype=np.float32), targets)
    # at 0.5: label 0 is a false negative -> micro tp=1 fn=1 -> 2/3, macro (0 + 1) / 2
    assert at_half == {"micro_f1": pytest.approx(2 / 3), "macro_f1": pytest.approx(0.5)}
    assert just_above == {"micro_f1": pytest.approx(1.0), "macro_f1": pytest.approx(1.0)}
    assert scores(torch.zeros(1, 1), "multilabel").item() == 0.5


# ---------------------------------------------------------------- multi-class


@pytest.mark.parametrize("chunks", [1, 4])
def test_multiclass_metrics_match_sklearn(chunks):
    rng = np.random.default_rng(2)
    logits = rng.normal(scale=1.5, size=(80, 6))
    targets = rng.integers(0, 6, size=80)
    probs = scores(torch.tensor(logits), "multiclass").numpy()

    got = compute("multiclass", 6, probs, targets, chunks)

    predictions = logits.argmax(axis=1)
    assert set(targets) == set(range(6))
    assert got["macro_f1"] == pytest.approx(sk_f1(targets, predictions, "macro"), abs=1e-6)
    assert got["micro_f1"] == pytest.approx(sk_f1(targets, predictions, "micro"), abs=1e-6)
    assert got["accuracy"] == pytest.approx(accuracy_score(targets, predictions), abs=1e-6)
    assert 0.0 < got["accuracy"] < 1.0


def test_multiclass_hand_worked():
    # true 0 0 1 2, predicted 0 1 1 1. Class 0: tp=1 fp=0 fn=1 -> F1 2/3; class 1: tp=1 fp=2 fn=0 -> 2/4;
    # class 2: tp=0 -> 0. Accuracy (= micro F1 for single-label) 2/4
    targets = np.array([0, 0, 1, 2])
    probs = np.eye(3, dtype=np.float32)[[0, 1, 1, 1]] * 0.8 + 0.2 / 3
    got = compute("multiclass", 3, probs, targets)
    assert got["accuracy"] == pytest.approx(0.5)
    assert got["micro_f1"] == pytest.approx(0.5)
    assert got["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3, abs=1e-6)


# ---------------------------------------------------------------- scores


def test_scores_multilabel_is_sigmoid():
    logits = torch.tensor([[0.0, 2.0, -3.0], [10.0, -10.0, 0.5]], dtype=torch.bfloat16)
    got = scores(logits, "multilabel")
    x = logits.float().numpy().astype(np.float64)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), 1.0 / (1.0 + np.exp(-x)), rtol=1e-6)
    assert not torch.allclose(got.sum(dim=-1), torch.ones(2))


def test_scores_multiclass_rows_sum_to_one():
    logits = torch.tensor([[0.0, 2.0, -3.0], [30.0, -30.0, 0.5], [1.0, 1.0, 1.0]])
    got = scores(logits, "multiclass")
    x = logits.numpy().astype(np.float64)
    softmax = np.exp(x - x.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(got.numpy(), softmax, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(dim=-1).numpy(), np.ones(3), rtol=1e-6)
    assert got[2].tolist() == pytest.approx([1 / 3] * 3)
