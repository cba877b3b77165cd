"""Asymmetric, focal, combined and class-balanced losses against formulas written out in numpy or by hand,
their gradients, their configs, and mixed precision / extreme logits for every loss."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.errors import ConfigError
from src.labels import LabelSpace
from src.losses.asymmetric import AsymmetricLoss
from src.losses.base import Loss, build_loss
from src.losses.bce import BinaryCrossEntropy
from src.losses.ce import CrossEntropy
from src.losses.class_balanced import ClassBalancedLoss, class_balanced_weights
from src.losses.combined import CombinedLoss
from src.losses.focal import FocalLoss
from tests.helpers import compose_train, np_bce, np_ce, np_log_softmax, one_hot


class MultilabelOnly(Loss):
    """A loss that keeps the base class's task list (multi-label only)."""

    def forward(self, logits, targets):
        return logits.sum()


def space(task: str, counts, num_train: int | None = None) -> LabelSpace:
    return LabelSpace(task, tuple(f"l{i}" for i in range(len(counts))), tuple(counts), num_train)

LOSS_CONF = Path(__file__).resolve().parents[2] / "conf" / "loss"


# ---------------------------------------------------------------- numpy references


def np_sigmoid_pair(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p = 1 / (1 + e^-x) and 1 - p = 1 / (1 + e^x), each computed directly (no 1 - p cancellation)."""
    x = x.astype(np.float64)
    return 1.0 / (1.0 + np.exp(-x)), 1.0 / (1.0 + np.exp(x))


def np_log_one_minus(small: np.ndarray, one_minus_small: np.ndarray) -> np.ndarray:
    """log(1 - a) given both a and 1 - a, from whichever keeps the precision (log1p for small a)."""
    with np.errstate(divide="ignore"):  # np.where evaluates both branches
        return np.where(small < 0.5, np.log1p(-small), np.log(one_minus_small))


def np_asl(logits, targets, gamma_neg, gamma_pos, clip, weight=None) -> float:
    """The paper's formula, elementwise: y (1-p)^g+ log p + (1-y) p_m^g- log(1-p_m), p_m = max(p - clip, 0)."""
    p, one_minus_p = np_sigmoid_pair(logits)
    y = targets.astype(np.float64)
    p_m = np.maximum(p - clip, 0.0)
    one_minus_p_m = np.minimum(one_minus_p + clip, 1.0)  # 1 - max(p - clip, 0)
    l_pos = one_minus_p**gamma_pos * np_log_one_minus(one_minus_p, p)
    l_neg = p_m**gamma_neg * np_log_one_minus(p_m, one_minus_p_m)  # numpy's 0^0 = 1, as the paper's torch.pow
    elementwise = y * l_pos + (1.0 - y) * l_neg
    w = np.ones(logits.shape[-1]) if weight is None else np.asarray(weight, dtype=np.float64)
    return float(-np.mean(w * elementwise))


def np_focal_sigmoid(logits, targets, gamma, alpha, weight=None) -> float:
    """-alpha_t (1 - p_t)^gamma log p_t per element (Lin et al. 2017, eq. 5), mean over B x C."""
    p, one_minus_p = np_sigmoid_pair(logits)
    y = targets.astype(np.float64)
    one_minus_p_t = np.where(y == 1, one_minus_p, p)
    alpha_t = np.ones_like(p) if alpha is None else np.where(y == 1, alpha, 1.0 - alpha)
    w = np.ones(logits.shape[-1]) if weight is None else np.asarray(weight, dtype=np.float64)
    log_p_t = np_log_one_minus(one_minus_p_t, np.where(y == 1, p, one_minus_p))
    return float(np.mean(-w * alpha_t * one_minus_p_t**gamma * log_p_t))


def np_focal_softmax(logits, class_ids, gamma, alpha, weight=None) -> float:
    """-alpha w_y (1 - p_y)^gamma log p_y per example, mean over B; 1 - p_y summed from the other classes."""
    probs = np.exp(np_log_softmax(logits))
    others = probs.copy()
    others[np.arange(len(class_ids)), class_ids] = 0.0
    one_minus_p_y = others.sum(axis=1)
    a = 1.0 if alpha is None else alpha
    w = np.ones(logits.shape[-1]) if weight is None else np.asarray(weight, dtype=np.float64)
    log_p_y = np_log_one_minus(one_minus_p_y, probs[np.arange(len(class_ids)), class_ids])
    return float(np.mean(-a * w[class_ids] * one_minus_p_y**gamma * log_p_y))


def t(array) -> torch.Tensor:
    return torch.tensor(np.asarray(array))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def grad_of(loss_fn: Loss, logits, targets) -> tuple[float, np.ndarray]:
    leaf = torch.tensor(np.asarray(logits, dtype=np.float32), requires_grad=True)
    value = loss_fn(leaf, torch.as_tensor(targets))
    value.backward()
    return value.item(), leaf.grad.numpy().astype(np.float64)


# ---------------------------------------------------------------- asymmetric loss


@pytest.mark.parametrize(
    ("gamma_neg", "gamma_pos", "clip"),
    [(4.0, 0.0, 0.05), (4.0, 1.0, 0.05), (2.0, 1.0, 0.2), (1.0, 0.5, 0.0), (0.0, 2.0, 0.1), (0.5, 0.0, 0.3)],
)
def test_asl_matches_numpy(rng, gamma_neg, gamma_pos, clip):
    logits = rng.normal(scale=3.0, size=(32, 6))
    targets = (rng.random((32, 6)) < 0.3).astype(np.float64)
    loss = AsymmetricLoss(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)(t(logits), t(targets))
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(np_asl(logits, targets, gamma_neg, gamma_pos, clip), rel=1e-5)


def test_asl_hand_worked_single_elements():
    # negative at p = 0.5, clip 0.1, gamma- 2: p_m = 0.4, L- = 0.4^2 * log(0.6)
    # positive at p = 0.5, gamma+ 1: L+ = 0.5 * log(0.5); the loss is the mean of the two negated terms
    loss = AsymmetricLoss(gamma_neg=2.0, gamma_pos=1.0, clip=0.1)(torch.zeros(1, 2), torch.tensor([[0.0, 1.0]]))
    expected = -(0.16 * np.log(0.6) + 0.5 * np.log(0.5)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_asl_without_focusing_or_margin_is_bce(rng):
    logits = rng.normal(scale=4.0, size=(16, 5))
    targets = (rng.random((16, 5)) < 0.4).astype(np.float64)
    asl = AsymmetricLoss(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)(t(logits), t(targets)).item()
    assert asl == pytest.approx(BinaryCrossEntropy()(t(logits), t(targets)).item(), rel=1e-6)
    assert asl == pytest.approx(np_bce(logits, targets), rel=1e-5)
    # and clip=None means no margin as well
    assert AsymmetricLoss(0.0, 0.0, clip=None)(t(logits), t(targets)).item() == pytest.approx(asl, rel=1e-7)


def test_asl_defaults_are_the_papers():
    loss = AsymmetricLoss()
    assert (loss.gamma_neg, loss.gamma_pos, loss.clip, loss.eps, loss.detach_focusing) == (4.0, 0.0, 0.05, 1e-8, False)


def test_asl_positive_gradient_at_p_001_equals_bce():
    logit = np.log(0.01 / 0.99)  # sigmoid = 0.01
    _, asl_grad = grad_of(AsymmetricLoss(gamma_neg=4.0, gamma_pos=0.0, clip=0.05), [[logit]], [[1.0]])
    _, bce_grad = grad_of(BinaryCrossEntropy(), [[logit]], [[1.0]])
    assert asl_grad[0, 0] == pytest.approx(0.01 - 1.0, rel=1e-5)  # d/dx -log sigmoid(x) = p - 1
    assert asl_grad[0, 0] == pytest.approx(bce_grad[0, 0], rel=1e-6)


def test_asl_easy_negatives_below_the_margin_get_exactly_zero_value_and_gradient():
    probs = np.array([[0.001, 0.01, 0.03, 0.049]])  # all below clip = 0.05
    logits = np.log(probs / (1 - probs))
    value, grad = grad_of(AsymmetricLoss(gamma_neg=4.0, clip=0.05), logits, np.zeros_like(logits))
    assert value == 0.0
    assert np.all(grad == 0.0)
    # also with gamma- < 1, where p_m^(gamma - 1) would be infinite at p_m = 0
    value, grad = grad_of(AsymmetricLoss(gamma_neg=0.5, clip=0.05), logits, np.zeros_like(logits))
    assert value == 0.0 and np.all(grad == 0.0)


@pytest.mark.parametrize("detach", [False, True])
def test_asl_negative_above_the_margin_has_the_analytic_gradient(detach):
    p, clip, gamma = 0.3, 0.05, 4.0
    value, grad = grad_of(AsymmetricLoss(gamma_neg=gamma, clip=clip, detach_focusing=detach),
                          [[np.log(p / (1 - p))]], [[0.0]])
    p_m = p - clip
    assert value == pytest.approx(-(p_m**gamma) * np.log(1 - p_m), rel=1e-5)
    # L = -p_m^g log(1 - p_m); dp/dx = p (1 - p); the first term is the focusing weight's own gradient
    focusing_part = 0.0 if detach else -gamma * p_m ** (gamma - 1) * np.log(1 - p_m)
    expected = p * (1 - p) * (focusing_part + p_m**gamma / (1 - p_m))
    assert grad[0, 0] != 0.0
    assert grad[0, 0] == pytest.approx(expected, rel=1e-4)


def test_asl_detach_focusing_changes_gradient_not_value(rng):
    logits = rng.normal(scale=2.0, size=(8, 4))
    targets = (rng.random((8, 4)) < 0.5).astype(np.float32)
    value, grad = grad_of(AsymmetricLoss(gamma_neg=4.0, gamma_pos=1.0), logits, targets)
    value_d, grad_d = grad_of(AsymmetricLoss(gamma_neg=4.0, gamma_pos=1.0, detach_focusing=True), logits, targets)
    assert value_d == pytest.approx(value, rel=1e-7)
    assert not np.allclose(grad, grad_d, rtol=1e-3, atol=1e-6)


def test_asl_on_multiclass_one_hot_and_weight_scales_columns(rng):
    logits = rng.normal(scale=2.0, size=(10, 4))
    targets = np.eye(4)[rng.integers(0, 4, size=10)]
    loss = AsymmetricLoss(weight=[1.0, 0.5, 2.0, 3.0])
    assert loss.tasks == ("multilabel", "multiclass")
    expected = np_asl(logits, targets, 4.0, 0.0, 0.05, weight=[1.0, 0.5, 2.0, 3.0])
    assert loss(t(logits), t(targets)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("kwargs", [{"clip": 1.0}, {"clip": -0.1}, {"gamma_neg": -1.0}], ids=str)
def test_asl_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        AsymmetricLoss(**kwargs)


# ---------------------------------------------------------------- focal loss


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, 0.75), (3.0, None), (1.0, 0.5)])
def test_focal_sigmoid_matches_numpy(rng, gamma, alpha):
    logits = rng.normal(scale=3.0, size=(24, 5))
    targets = (rng.random((24, 5)) < 0.3).astype(np.float64)
    loss = FocalLoss(gamma=gamma, alpha=alpha)(t(logits), t(targets))
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(np_focal_sigmoid(logits, targets, gamma, alpha), rel=1e-5)


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, None), (4.0, 1.0)])
def test_focal_softmax_matches_numpy(rng, gamma, alpha):
    logits = rng.normal(scale=3.0, size=(24, 6))
    class_ids = rng.integers(0, 6, size=24)
    loss = FocalLoss(gamma=gamma, alpha=alpha, exclusive=True)(t(logits), one_hot(class_ids, 6))
    assert loss.item() == pytest.approx(np_focal_softmax(logits, class_ids, gamma, alpha), rel=1e-5)


def test_focal_hand_worked():
    # sigmoid, x = 0 (p = 0.5), positive, gamma 2, alpha 0.25: 0.25 * 0.5^2 * log 2
    value = FocalLoss(gamma=2.0, alpha=0.25)(torch.zeros(1, 1), torch.ones(1, 1)).item()
    assert value == pytest.approx(0.25 * 0.25 * np.log(2.0), rel=1e-6)
    # softmax, 4 equal logits (p_y = 1/4), gamma 2, no alpha: (3/4)^2 * log 4
    value = FocalLoss(gamma=2.0, alpha=None, exclusive=True)(torch.zeros(1, 4), one_hot([2], 4)).item()
    assert value == pytest.approx(0.5625 * np.log(4.0), rel=1e-6)


def test_focal_keeps_precision_for_confident_right_predictions():
    # logits [30, 0], class 0: 1 - p_y = 1 / (1 + e^30) = 9.3576229688e-14 and -log p_y = log(1 + e^-30) equals it
    # to 1e-26, so with gamma 0.5 and no alpha the loss is (9.3576229688e-14)^1.5 = 2.8625e-20
    value = FocalLoss(gamma=0.5, alpha=None, exclusive=True)(torch.tensor([[30.0, 0.0]]), one_hot([0], 2)).item()
    assert value == pytest.approx(9.3576229688e-14**1.5, rel=1e-4, abs=0)
    # sigmoid form, a positive at x = 30: (1 - p)^0.5 * -log p = (9.3576229688e-14)^1.5 as well
    value = FocalLoss(gamma=0.5, alpha=None)(torch.tensor([[30.0]]), torch.tensor([[1.0]])).item()
    assert value == pytest.approx(9.3576229688e-14**1.5, rel=1e-4, abs=0)


def test_focal_without_focusing_is_bce_and_ce(rng):
    logits = rng.normal(scale=3.0, size=(16, 5))
    targets = (rng.random((16, 5)) < 0.4).astype(np.float64)
    class_ids = rng.integers(0, 5, size=16)
    plain = FocalLoss(gamma=0.0, alpha=None)
    assert plain(t(logits), t(targets)).item() == pytest.approx(BinaryCrossEntropy()(t(logits), t(targets)).item(),
                                                                rel=1e-6)
    assert plain(t(logits), t(targets)).item() == pytest.approx(np_bce(logits, targets), rel=1e-5)
    softmax = FocalLoss(gamma=0.0, alpha=None, exclusive=True)
    classes = one_hot(class_ids, 5)
    assert softmax(t(logits), classes).item() == pytest.approx(CrossEntropy()(t(logits), classes).item(), rel=1e-6)
    assert softmax(t(logits), classes).item() == pytest.approx(np_ce(logits, class_ids), rel=1e-5)


def test_focal_weight_per_label_and_per_class(rng):
    logits = rng.normal(scale=2.0, size=(12, 3))
    targets = (rng.random((12, 3)) < 0.4).astype(np.float64)
    class_ids = rng.integers(0, 3, size=12)
    w = [0.5, 2.0, 4.0]
    loss = FocalLoss(gamma=2.0, alpha=0.25, weight=w)
    assert loss(t(logits), t(targets)).item() == pytest.approx(np_focal_sigmoid(logits, targets, 2.0, 0.25, w),
                                                               rel=1e-5)
    softmax = FocalLoss(gamma=2.0, alpha=0.25, weight=w, exclusive=True)
    assert softmax(t(logits), one_hot(class_ids, 3)).item() == pytest.approx(
        np_focal_softmax(logits, class_ids, 2.0, 0.25, w), rel=1e-5)


def numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of a float64 numpy function."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = h
        grad[index] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_focal_and_asl_gradients_match_numeric_differences_of_numpy(rng, gamma):
    logits = rng.normal(scale=2.0, size=(6, 4)).astype(np.float32).astype(np.float64)
    targets = (rng.random((6, 4)) < 0.4).astype(np.float64)
    class_ids = rng.integers(0, 4, size=6)
    cases = [
        (FocalLoss(gamma=gamma, alpha=0.25), targets, lambda x: np_focal_sigmoid(x, targets, gamma, 0.25)),
        (FocalLoss(gamma=gamma, alpha=0.25, exclusive=True), np.eye(4)[class_ids],
         lambda x: np_focal_softmax(x, class_ids, gamma, 0.25)),
        (AsymmetricLoss(gamma_neg=gamma + 1, gamma_pos=gamma, clip=0.05), targets,
         lambda x: np_asl(x, targets, gamma + 1, gamma, 0.05)),
    ]
    for loss_fn, y, reference in cases:
        _, grad = grad_of(loss_fn, logits, y)
        assert np.allclose(grad, numeric_grad(reference, logits), rtol=1e-3, atol=1e-7)


def test_build_loss_gives_focal_its_softmax_form_on_multiclass_data_also_when_nested():
    multiclass = space("multiclass", [3, 4, 5], 12)
    assert build_loss(FocalLoss, multiclass).exclusive
    assert not build_loss(FocalLoss, space("multilabel", [3, 4, 5], 12)).exclusive
    assert build_loss(functools.partial(ClassBalancedLoss, FocalLoss), multiclass).base.exclusive
    assert build_loss(functools.partial(CombinedLoss, FocalLoss, CrossEntropy), multiclass).first.exclusive


@pytest.mark.parametrize("kwargs", [{"gamma": -1.0}, {"alpha": 1.5}, {"alpha": -0.1}], ids=str)
def test_focal_rejects_bad_options(kwargs):
    with pytest.raises(ConfigError):
        FocalLoss(**kwargs)


# ---------------------------------------------------------------- combined loss


def test_combined_is_the_weighted_sum(rng):
    logits = rng.normal(scale=2.0, size=(16, 5))
    targets = (rng.random((16, 5)) < 0.3).astype(np.float64)
    combined = CombinedLoss(BinaryCrossEntropy, functools.partial(AsymmetricLoss, gamma_neg=2.0), ratio=0.3)
    expected = 0.3 * np_bce(logits, targets) + 0.7 * np_asl(logits, targets, 2.0, 0.0, 0.05)
    assert combined(t(logits), t(targets)).item() == pytest.approx(expected, rel=1e-5)
    separate = 0.3 * BinaryCrossEntropy()(t(logits), t(targets)) + 0.7 * AsymmetricLoss(2.0)(t(logits), t(targets))
    assert combined(t(logits), t(targets)).item() == pytest.approx(separate.item(), rel=1e-6)


def test_combined_ratio_one_and_zero_are_one_loss_alone(rng):
    logits = rng.normal(scale=2.0, size=(8, 4))
    targets = (rng.random((8, 4)) < 0.3).astype(np.float64)
    first_only = CombinedLoss(BinaryCrossEntropy, AsymmetricLoss, ratio=1.0)(t(logits), t(targets)).item()
    second_only = CombinedLoss(BinaryCrossEntropy, AsymmetricLoss, ratio=0.0)(t(logits), t(targets)).item()
    assert first_only == pytest.approx(np_bce(logits, targets), rel=1e-5)
    assert second_only == pytest.approx(np_asl(logits, targets, 4.0, 0.0, 0.05), rel=1e-5)
    assert first_only != pytest.approx(second_only, rel=1e-3)


def test_combined_passes_data_facts_to_inner_losses():
    factory = functools.partial(CombinedLoss, first=functools.partial(BinaryCrossEntropy, pos_weight="auto"),
                                second=functools.partial(CrossEntropy, class_weights="auto"), ratio=0.5)
    loss = build_loss(factory, space("multiclass", [10, 50, 40], 100))
    assert loss.first.pos_weight.tolist() == pytest.approx([9.0, 1.0, 1.5])  # (100 - n) / n, clipped to >= 1
    assert loss.second.class_weights.tolist() == pytest.approx([100 / 30, 100 / 150, 100 / 120])  # N / (C n)
    assert loss.tasks == ("multiclass",)  # CE is multi-class only
    with pytest.raises(ConfigError, match="this dataset is multilabel"):
        build_loss(factory, space("multilabel", [10, 50, 40], 100))
    # without the facts the inner "auto" cannot be computed, and says so
    with pytest.raises(ConfigError, match="build_loss"):
        factory()


def test_combined_without_facts_leaves_inner_defaults_alone():
    seen = {}

    def inner(label_counts=(7, 8)):
        seen["label_counts"] = label_counts
        return BinaryCrossEntropy()

    CombinedLoss(inner, AsymmetricLoss)
    assert seen == {"label_counts": (7, 8)}  # a missing fact is not passed as None
    CombinedLoss(inner, AsymmetricLoss, label_counts=[1, 2])
    assert seen == {"label_counts": [1, 2]}


def test_combined_yaml_forwards_facts_to_a_nested_auto(tmp_path):
    cfg = compose_train(tmp_path, ["loss=combined"]).loss
    cfg.first.pos_weight = "auto"
    loss = build_loss(instantiate(cfg), space("multilabel", [10, 50, 0], 100))
    assert isinstance(loss, CombinedLoss) and isinstance(loss.second, AsymmetricLoss)
    assert loss.first.pos_weight.tolist() == pytest.approx([9.0, 1.0, 30.0])  # max_pos_weight 30
    assert loss.ratio == 0.7


def test_combined_rejects_bad_ratio_and_disjoint_tasks():
    with pytest.raises(ConfigError, match="ratio"):
        CombinedLoss(BinaryCrossEntropy, AsymmetricLoss, ratio=1.5)

    with pytest.raises(ConfigError, match="share no task"):
        CombinedLoss(MultilabelOnly, CrossEntropy)


# ---------------------------------------------------------------- class-balanced loss


def test_class_balanced_weights_hand_worked():
    # beta 0.9, counts [1, 10, 100]: w_c = 0.1 / (1 - 0.9^n)
    #   n = 1:   0.1 / 0.1 = 1
    #   n = 10:  0.9^10 = 0.3486784401 -> 0.1 / 0.6513215599 = 0.153533993...
    #   n = 100: 0.9^100 = 2.65614e-5  -> 0.1 / 0.9999734386 = 0.100002656...
    # sum = 1.253536649..., times C / sum = 3 / 1.253536649
    raw = np.array([1.0, 0.1 / 0.6513215599, 0.1 / (1 - 2.6561398887587e-5)])
    expected = raw * 3 / 1.2535366494892
    weights = class_balanced_weights([1, 10, 100], beta=0.9)
    assert weights.tolist() == pytest.approx(expected.tolist(), rel=1e-9)
    assert weights.sum() == pytest.approx(3.0)
    # beta 0.5, counts [1, 2, 3]: raw [1, 0.5/0.75, 0.5/0.875] = [21, 14, 12] / 21, sum 47/21 -> 3 * [21, 14, 12] / 47
    assert class_balanced_weights([1, 2, 3], beta=0.5).tolist() == pytest.approx([63 / 47, 42 / 47, 36 / 47])
    # an unseen label counts as seen once; beta 0 is no reweighting
    assert class_balanced_weights([0, 1], beta=0.99).tolist() == pytest.approx([1.0, 1.0])
    assert class_balanced_weights([1, 1000, 7], beta=0.0).tolist() == pytest.approx([1.0, 1.0, 1.0])


@pytest.mark.parametrize("beta", [1.0, -0.5])
def test_class_balanced_rejects_bad_beta(beta):
    with pytest.raises(ConfigError, match="beta"):
        class_balanced_weights([1, 2], beta)


def test_class_balanced_bce_is_weighted_numpy_bce(rng):
    counts = [1, 10, 100]
    loss = build_loss(functools.partial(ClassBalancedLoss, BinaryCrossEntropy, beta=0.9),
                      space("multilabel", counts, 120))
    logits = rng.normal(scale=2.0, size=(16, 3))
    targets = (rng.random((16, 3)) < 0.4).astype(np.float64)
    w = 3 * np.array([1.0, 0.1 / 0.6513215599, 0.1 / (1 - 2.6561398887587e-5)]) / 1.2535366494892
    bce_elementwise = np.logaddexp(0.0, logits) - targets * logits  # -(y log p + (1 - y) log(1 - p))
    expected = np.mean(w[None, :] * bce_elementwise)
    assert loss.tasks == ("multilabel", "multiclass")
    assert loss.class_weights.tolist() == pytest.approx(w.tolist(), rel=1e-6)
    assert loss(t(logits), t(targets)).item() == pytest.approx(expected, rel=1e-5)


def test_class_balanced_ce_is_weighted_numpy_ce(rng):
    counts = [1, 2, 3]
    loss = build_loss(functools.partial(ClassBalancedLoss, CrossEntropy, beta=0.5), space("multiclass", counts, 6))
    logits = rng.normal(scale=2.0, size=(20, 3))
    class_ids = rng.integers(0, 3, size=20)
    w = np.array([63, 42, 36]) / 47
    nll = -np_log_softmax(logits)[np.arange(20), class_ids]
    expected = (w[class_ids] * nll).sum() / w[class_ids].sum()  # PyTorch's weighted mean
    assert loss.tasks == ("multiclass",)
    assert loss(t(logits), one_hot(class_ids, 3)).item() == pytest.approx(expected, rel=1e-5)
    assert loss(t(logits), one_hot(class_ids, 3)).item() == pytest.approx(np_ce(logits, class_ids, w), rel=1e-5)


def test_class_balanced_focal_and_asl_bases(rng):
    logits = rng.normal(scale=2.0, size=(16, 3))
    targets = (rng.random((16, 3)) < 0.4).astype(np.float64)
    w = np.array([63, 42, 36]) / 47
    focal = ClassBalancedLoss(functools.partial(FocalLoss, gamma=2.0, alpha=0.25), beta=0.5, label_counts=[1, 2, 3])
    assert focal(t(logits), t(targets)).item() == pytest.approx(np_focal_sigmoid(logits, targets, 2.0, 0.25, w),
                                                                rel=1e-5)
    asl = ClassBalancedLoss(AsymmetricLoss, beta=0.5, label_counts=[1, 2, 3])
    assert asl(t(logits), t(targets)).item() == pytest.approx(np_asl(logits, targets, 4.0, 0.0, 0.05, w), rel=1e-5)


def test_class_balanced_passes_facts_to_the_base_and_guards_its_inputs():
    base = functools.partial(BinaryCrossEntropy, pos_weight="auto")
    loss = build_loss(functools.partial(ClassBalancedLoss, base, beta=0.5), space("multilabel", [1, 2, 3], 10))
    assert loss.base.pos_weight.tolist() == pytest.approx([9.0, 4.0, 7 / 3])
    with pytest.raises(ConfigError, match="build_loss"):
        ClassBalancedLoss(BinaryCrossEntropy)
    with pytest.raises(ConfigError, match="class_balanced sets it"):
        ClassBalancedLoss(functools.partial(BinaryCrossEntropy, weight=[1.0, 2.0]), label_counts=[1, 2])
    with pytest.raises(ConfigError, match="no per-label weights"):
        ClassBalancedLoss(functools.partial(CombinedLoss, BinaryCrossEntropy, AsymmetricLoss), label_counts=[1, 2])


def test_class_balanced_yaml(rng, tmp_path):
    cfg = compose_train(tmp_path, ["loss=class_balanced"]).loss
    assert cfg.beta == 0.999
    factory = instantiate(cfg)
    with pytest.raises(ConfigError, match="label counts"):
        factory()
    loss = build_loss(factory, space("multilabel", [5, 1, 0], 8))
    assert isinstance(loss, ClassBalancedLoss) and isinstance(loss.base, BinaryCrossEntropy)
    raw = np.array([0.001 / (1 - 0.999**5), 1.0, 1.0])  # n = 0 counts as 1
    assert loss.class_weights.tolist() == pytest.approx((3 * raw / raw.sum()).tolist(), rel=1e-6)


# ---------------------------------------------------------------- configs


def test_asymmetric_and_focal_yaml_instantiate_without_arguments(tmp_path):
    asl = instantiate(OmegaConf.load(LOSS_CONF / "asymmetric.yaml"))()
    assert isinstance(asl, AsymmetricLoss) and isinstance(asl, Loss)
    assert (asl.gamma_neg, asl.gamma_pos, asl.clip, asl.eps, asl.detach_focusing) == (4.0, 0.0, 0.05, 1e-8, False)
    focal = instantiate(OmegaConf.load(LOSS_CONF / "focal.yaml"))()
    assert isinstance(focal, FocalLoss) and isinstance(focal, Loss)
    assert (focal.gamma, focal.alpha) == (2.0, 0.25)
    combined = instantiate(compose_train(tmp_path, ["loss=combined"]).loss)()
    assert isinstance(combined, CombinedLoss)
    assert isinstance(combined.first, BinaryCrossEntropy) and isinstance(combined.second, AsymmetricLoss)


@pytest.mark.parametrize("name", ["asymmetric", "focal", "combined", "class_balanced"])
def test_new_yaml_files_start_with_a_comment(name):
    assert (LOSS_CONF / f"{name}.yaml").read_text().startswith("# ")


# ---------------------------------------------------------------- mixed precision and extreme logits

C = 5
ALL_LOSSES = {
    "bce": (lambda: BinaryCrossEntropy(pos_weight=[1.0, 2.0, 30.0, 1.0, 5.0]), "multilabel"),
    "ce": (lambda: CrossEntropy(class_weights=[1.0, 2.0, 0.5, 1.0, 3.0], label_smoothing=0.1), "multiclass"),
    "asl": (lambda: AsymmetricLoss(), "multilabel"),
    "asl_no_margin_g_half": (lambda: AsymmetricLoss(gamma_neg=0.5, gamma_pos=0.5, clip=0.0), "multilabel"),
    "asl_detached": (lambda: AsymmetricLoss(gamma_pos=1.0, detach_focusing=True), "multilabel"),
    "asl_multiclass": (lambda: AsymmetricLoss(), "multiclass"),
    "focal_sigmoid": (lambda: FocalLoss(), "multilabel"),
    "focal_sigmoid_g_half": (lambda: FocalLoss(gamma=0.5, alpha=None), "multilabel"),
    "focal_softmax": (lambda: FocalLoss(exclusive=True), "multiclass"),
    "focal_softmax_g_half": (lambda: FocalLoss(gamma=0.5, exclusive=True), "multiclass"),
    "combined": (lambda: CombinedLoss(BinaryCrossEntropy, AsymmetricLoss), "multilabel"),
    "cb_bce": (lambda: ClassBalancedLoss(BinaryCrossEntropy, label_counts=[1, 10, 100, 1000, 0]), "multilabel"),
    "cb_ce": (lambda: ClassBalancedLoss(CrossEntropy, label_counts=[1, 10, 100, 1000, 0]), "multiclass"),
    "cb_focal": (lambda: ClassBalancedLoss(FocalLoss, label_counts=[1, 10, 100, 1000, 0]), "multilabel"),
    "cb_asl": (lambda: ClassBalancedLoss(AsymmetricLoss, label_counts=[1, 10, 100, 1000, 0]), "multilabel"),
}


def make_targets(task: str, gen: torch.Generator, batch: int = 8) -> torch.Tensor:
    if task == "multiclass":
        return one_hot(torch.randint(0, C, (batch,), generator=gen), C)
    return torch.randint(0, 2, (batch, C), generator=gen).float()


def extreme_cases(task: str):
    """Logits of +-30 with random targets, all confidently right, and all confidently wrong."""
    gen = torch.Generator().manual_seed(1)
    signs = (torch.randint(0, 2, (8, C), generator=gen) * 2 - 1).float()
    logits = 30.0 * signs
    if task == "multiclass":
        right = one_hot(logits.argmax(dim=1), C)
        wrong = one_hot(logits.argmin(dim=1), C)
        return [(logits, make_targets(task, gen)), (logits, right), (logits, wrong)]
    right = (signs > 0).float()
    return [(logits, make_targets(task, gen)), (logits, right), (logits, 1.0 - right)]


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
def test_bf16_autocast_value_close_to_fp32(name):
    make, task = ALL_LOSSES[name]
    loss_fn = make()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(8, C, generator=gen) * 3.0
    targets = make_targets(task, gen)
    reference = loss_fn(logits, targets)
    rounded_reference = loss_fn(logits.bfloat16().float(), targets)

    leaf = logits.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        produced = leaf @ torch.eye(C)  # a bf16 matmul under autocast, as the head's output would be
        assert produced.dtype == torch.bfloat16
        value = loss_fn(produced, targets)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(rounded_reference.item(), rel=1e-5)  # computed in fp32 from bf16 logits
    assert value.item() == pytest.approx(reference.item(), rel=2e-2)  # bf16 rounding of the logits only
    value.backward()
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(ALL_LOSSES))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_extreme_logits_in_half_precision_stay_finite(name, dtype):
    make, task = ALL_LOSSES[name]
    loss_fn = make()
    for logits, targets in extreme_cases(task):
        reference = loss_fn(logits, targets)
        leaf = logits.to(dtype).requires_grad_(True)  # +-30 is exact in fp16 and bf16
        value = loss_fn(leaf, targets)
        assert value.dtype == torch.float32
        assert torch.isfinite(value)
        assert value.item() == pytest.approx(reference.item(), rel=1e-6, abs=0)
        value.backward()
        assert leaf.grad.dtype == dtype
        assert torch.isfinite(leaf.grad.float()).all()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_value = loss_fn(logits.bfloat16() @ torch.eye(C, dtype=torch.bfloat16), targets)
        assert torch.isfinite(autocast_value)
        assert autocast_value.item() == pytest.approx(reference.item(), rel=1e-6, abs=0)


def test_extreme_logits_values_match_numpy():
    """At +-30 the log-sigmoid forms keep the exact loss: a wrong positive costs 30, not log(eps)."""
    for logits, targets in extreme_cases("multilabel"):
        x, y = logits.numpy(), targets.numpy()
        for gamma_neg, gamma_pos, clip in [(4.0, 0.0, 0.05), (0.0, 0.0, 0.0), (2.0, 1.0, 0.0)]:
            value = AsymmetricLoss(gamma_neg, gamma_pos, clip)(logits, targets).item()
            assert value == pytest.approx(np_asl(x, y, gamma_neg, gamma_pos, clip), rel=1e-4, abs=0)
        # all right: each term is ~(1e-13)^3, below fp32's normal range, so only an absolute bound holds there
        assert FocalLoss()(logits, targets).item() == pytest.approx(np_focal_sigmoid(x, y, 2.0, 0.25), rel=1e-4,
                                                                    abs=1e-36)
    wrong_positive = AsymmetricLoss(gamma_pos=0.0)(torch.tensor([[-30.0]]), torch.tensor([[1.0]])).item()
    assert wrong_positive == pytest.approx(30.0, rel=1e-6)
    for logits, classes in extreme_cases("multiclass"):
        expected = np_focal_softmax(logits.numpy(), classes.argmax(1).numpy(), 2.0, 0.25)
        assert FocalLoss(exclusive=True)(logits, classes).item() == pytest.approx(expected, rel=1e-4, abs=0)
