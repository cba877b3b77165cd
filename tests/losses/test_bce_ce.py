"""BCE and CE against formulas written out in numpy / scikit-learn, plus build_loss and mixed precision."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from src.errors import ConfigError
from src.labels import LabelSpace
from src.losses.base import Loss, build_loss
from src.losses.bce import BinaryCrossEntropy
from src.losses.ce import CrossEntropy
from tests.helpers import np_bce, np_ce, np_log_softmax, one_hot


def space(task: str, counts, num_train: int | None = None) -> LabelSpace:
    return LabelSpace(task, tuple(f"l{i}" for i in range(len(counts))), tuple(counts), num_train)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------- BCE


@pytest.mark.parametrize("pos_weight", [None, [1.0, 2.5, 7.0, 0.5]], ids=["plain", "pos_weight"])
def test_bce_matches_numpy_formula(rng, pos_weight):
    logits = rng.normal(scale=3.0, size=(16, 4))
    targets = (rng.random((16, 4)) < 0.4).astype(np.float64)

    loss = BinaryCrossEntropy(pos_weight=pos_weight)(torch.tensor(logits), torch.tensor(targets))

    assert loss.dtype == torch.float32
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(np_bce(logits, targets, pos_weight), rel=1e-5)


def test_bce_pos_weight_changes_only_positive_terms(rng):
    """pos_weight must scale the positive terms: with all-negative targets it has no effect at all."""
    logits = torch.tensor(rng.normal(size=(8, 3)))
    negatives = torch.zeros(8, 3)
    positives = torch.ones(8, 3)
    weighted = BinaryCrossEntropy(pos_weight=[3.0, 3.0, 3.0])
    plain = BinaryCrossEntropy()
    assert weighted(logits, negatives).item() == pytest.approx(plain(logits, negatives).item(), rel=1e-6)
    tripled = 3.0 * plain(logits, positives).item()
    assert weighted(logits, positives).item() == pytest.approx(tripled, rel=1e-6)


def test_bce_auto_pos_weight_hand_worked():
    # (N - n) / n: 90/10 = 9; 50/50 = 1; n = 0 -> N/1 = 100 clipped to 30; 20/80 = 0.25 clipped up to 1.
    loss = BinaryCrossEntropy(pos_weight="auto", max_pos_weight=30.0, label_counts=[10, 50, 0, 80],
                              num_examples=100)
    assert loss.pos_weight.dtype == torch.float32
    assert loss.pos_weight.tolist() == pytest.approx([9.0, 1.0, 30.0, 1.0])


def test_bce_auto_pos_weight_respects_max():
    loss = BinaryCrossEntropy(pos_weight="auto", max_pos_weight=5.0, label_counts=[10, 4], num_examples=40)
    # 30/10 = 3 stays; 36/4 = 9 clipped to 5
    assert loss.pos_weight.tolist() == pytest.approx([3.0, 5.0])


def test_bce_pos_weight_list_taken_as_given_and_none_is_none():
    given = BinaryCrossEntropy(pos_weight=[0.5, 40.0], label_counts=[1, 1], num_examples=10)
    assert given.pos_weight.tolist() == pytest.approx([0.5, 40.0])  # no clipping of explicit values
    assert BinaryCrossEntropy(pos_weight=None, label_counts=[1], num_examples=2).pos_weight is None


@pytest.mark.parametrize("bad", ["balanced", "Auto", ""])
def test_bce_bad_pos_weight_string_raises(bad):
    with pytest.raises(ConfigError, match="pos_weight"):
        BinaryCrossEntropy(pos_weight=bad, label_counts=[1, 2], num_examples=5)


def test_bce_auto_without_counts_raises():
    with pytest.raises(ConfigError, match="build_loss"):
        BinaryCrossEntropy(pos_weight="auto")


# ---------------------------------------------------------------- CE


def test_ce_matches_numpy_log_softmax(rng):
    logits = rng.normal(scale=2.0, size=(20, 5))
    targets = rng.integers(0, 5, size=20)
    loss = CrossEntropy()(torch.tensor(logits), one_hot(targets, 5))
    nll = -np_log_softmax(logits)[np.arange(20), targets].mean()
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(nll, rel=1e-5)
    assert loss.item() == pytest.approx(np_ce(logits, targets), rel=1e-5)


def test_ce_class_weights_is_weighted_mean(rng):
    logits = rng.normal(size=(20, 4))
    targets = rng.integers(0, 4, size=20)
    weights = np.array([1.0, 3.0, 0.5, 2.0])
    loss = CrossEntropy(class_weights=weights.tolist())(torch.tensor(logits), one_hot(targets, 4))
    nll = -np_log_softmax(logits)[np.arange(20), targets]
    expected = (weights[targets] * nll).sum() / weights[targets].sum()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ce_label_smoothing_uses_smoothed_target_distribution(rng):
    logits = rng.normal(size=(12, 6))
    targets = rng.integers(0, 6, size=12)
    eps = 0.2
    q = np.full((12, 6), eps / 6)
    q[np.arange(12), targets] = 1 - eps + eps / 6
    assert q.sum(axis=1) == pytest.approx(np.ones(12))
    expected = float(np.mean(-(q * np_log_softmax(logits)).sum(axis=1)))

    loss = CrossEntropy(label_smoothing=eps)(torch.tensor(logits), one_hot(targets, 6))

    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert loss.item() != pytest.approx(CrossEntropy()(torch.tensor(logits), one_hot(targets, 6)).item())


def test_ce_weights_and_smoothing_together(rng):
    logits = rng.normal(size=(15, 3))
    targets = rng.integers(0, 3, size=15)
    weights = [2.0, 0.5, 1.0]
    loss_fn = CrossEntropy(class_weights=weights, label_smoothing=0.1)
    loss = loss_fn(torch.tensor(logits), one_hot(targets, 3))
    assert loss.item() == pytest.approx(np_ce(logits, targets, weights, 0.1), rel=1e-5)


def test_ce_auto_class_weights_equal_sklearn_balanced():
    class_ids = np.array([0] * 5 + [1] * 20 + [2] * 1 + [3] * 14)
    counts = np.bincount(class_ids, minlength=4)
    loss = CrossEntropy(class_weights="auto", label_counts=counts.tolist())
    expected = compute_class_weight("balanced", classes=np.arange(4), y=class_ids)
    assert loss.class_weights.dtype == torch.float32
    assert loss.class_weights.tolist() == pytest.approx(expected.tolist(), rel=1e-6)


def test_ce_auto_class_weights_absent_class_gets_largest_finite_weight():
    loss = CrossEntropy(class_weights="auto", label_counts=[6, 3, 0])
    weights = loss.class_weights
    assert torch.isfinite(weights).all()
    # total / (C * max(count, 1)) = 9 / (3 * [6, 3, 1])
    assert weights.tolist() == pytest.approx([0.5, 1.0, 3.0])


def test_ce_bad_class_weights_string_raises():
    with pytest.raises(ConfigError, match="class_weights"):
        CrossEntropy(class_weights="inverse", label_counts=[1, 2])


# ---------------------------------------------------------------- build_loss


def test_build_loss_passes_only_the_facts_a_signature_asks_for():
    seen = {}

    def only_counts(label_counts):
        seen["only_counts"] = label_counts
        return BinaryCrossEntropy()

    def nothing():
        seen["nothing"] = True
        return BinaryCrossEntropy()

    build_loss(only_counts, space("multilabel", (3, 4), 10))
    build_loss(nothing, space("multilabel", [3, 4], 10))
    assert seen == {"only_counts": [3, 4], "nothing": True}

    # CrossEntropy has no num_examples parameter: passing it would be a TypeError
    ce = build_loss(functools.partial(CrossEntropy, class_weights="auto"), space("multiclass", [6, 3, 0], 9))
    assert ce.class_weights.tolist() == pytest.approx([0.5, 1.0, 3.0])
    bce = build_loss(functools.partial(BinaryCrossEntropy, pos_weight="auto"), space("multilabel", [10, 50, 0], 100))
    assert bce.pos_weight.tolist() == pytest.approx([9.0, 1.0, 30.0])


class MultilabelOnly(Loss):
    """A loss that keeps the base class's task list (multi-label only)."""

    def forward(self, logits, targets):
        return logits.sum()


def test_build_loss_refuses_a_multilabel_only_loss_for_multiclass():
    with pytest.raises(ConfigError, match="this dataset is multiclass") as info:
        build_loss(MultilabelOnly, space("multiclass", [1, 2], 3))
    assert "loss=ce" in str(info.value)
    assert "MultilabelOnly" in str(info.value)


def test_bce_on_multiclass_is_one_vs_rest_over_one_hot(rng):
    """BCE accepts multi-class data as one-vs-rest BCE on its one-hot targets."""
    loss = build_loss(functools.partial(BinaryCrossEntropy, pos_weight="auto"), space("multiclass", [10, 50, 40], 100))
    logits = rng.normal(size=(12, 3))
    class_ids = rng.integers(0, 3, size=12)
    value = loss(torch.tensor(logits), one_hot(class_ids, 3))
    assert value.item() == pytest.approx(np_bce(logits, np.eye(3)[class_ids], [9.0, 1.0, 1.5]), rel=1e-5)


def test_build_loss_refuses_ce_for_multilabel():
    with pytest.raises(ConfigError, match="multilabel") as info:
        build_loss(CrossEntropy, space("multilabel", [1, 2], 3))
    assert "loss=bce" in str(info.value)
    assert "CrossEntropy works for multiclass" in str(info.value)


# ---------------------------------------------------------------- mixed precision and extreme logits


def _cases():
    gen = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (8, 5), generator=gen) * 2 - 1
    extreme = (30.0 * signs).to(torch.bfloat16)  # +-30 exactly representable in bf16
    multi_hot = torch.randint(0, 2, (8, 5), generator=gen).float()
    class_ids = torch.randint(0, 5, (8,), generator=gen)
    classes = one_hot(class_ids, 5)
    return [
        (BinaryCrossEntropy(pos_weight=[1.0, 2.0, 30.0, 1.0, 5.0]), extreme, multi_hot),
        (BinaryCrossEntropy(), extreme, 1.0 - (signs > 0).float()),  # every prediction confidently wrong
        (CrossEntropy(class_weights=[1.0, 2.0, 0.5, 1.0, 3.0], label_smoothing=0.1), extreme, classes),
        (CrossEntropy(), extreme, classes),
    ]


@pytest.mark.parametrize("case", range(4), ids=["bce_pw", "bce_wrong", "ce_w_ls", "ce"])
def test_losses_under_bf16_autocast_and_extreme_logits(case):
    loss_fn, logits_bf16, targets = _cases()[case]
    reference = loss_fn(logits_bf16.float(), targets)
    if isinstance(loss_fn, BinaryCrossEntropy):
        pw = None if loss_fn.pos_weight is None else loss_fn.pos_weight.numpy()
        expected = np_bce(logits_bf16.float().numpy(), targets.numpy(), pw)
        assert reference.item() == pytest.approx(expected, rel=1e-5)
    else:
        w = None if loss_fn.class_weights is None else loss_fn.class_weights.numpy()
        expected = np_ce(logits_bf16.float().numpy(), targets.argmax(1).numpy(), w, loss_fn.label_smoothing)
        assert reference.item() == pytest.approx(expected, rel=1e-5)

    leaf = logits_bf16.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # the logits come out of a bf16 matmul, as in a real autocast forward
        produced = leaf @ torch.eye(5, dtype=torch.bfloat16)
        assert produced.dtype == torch.bfloat16
        value = loss_fn(produced, targets)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(reference.item(), rel=1e-3)
    value.backward()
    assert leaf.grad is not None and leaf.grad.dtype == torch.bfloat16
    assert torch.isfinite(leaf.grad.float()).all()
    assert leaf.grad.abs().sum() > 0
