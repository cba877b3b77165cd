"""Label smoothing for the sigmoid losses (BCE, asymmetric, focal): values against numpy formulas on the soft
targets y (1 - eps) + eps / 2, the minimiser it moves, and the one combination it refuses."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from src.errors import ConfigError
from src.labels import LabelSpace
from src.losses.asymmetric import AsymmetricLoss
from src.losses.base import build_loss
from src.losses.bce import BinaryCrossEntropy
from src.losses.class_balanced import ClassBalancedLoss
from src.losses.focal import FocalLoss
from tests.helpers import compose_train, np_bce
from tests.losses.test_imbalance_losses import np_asl, np_sigmoid_pair


def np_soft(targets: np.ndarray, eps: float) -> np.ndarray:
    return np.where(targets == 1, 1.0 - eps / 2, eps / 2)


def np_focal_soft(logits, y, gamma, alpha) -> float:
    """torchvision's sigmoid_focal_loss written out: BCE(x, y) * (1 - p_t)^gamma * alpha_t with p_t = p y +
    (1 - p)(1 - y) and alpha_t = alpha y + (1 - alpha)(1 - y), for soft y; mean over B x C."""
    p, one_minus_p = np_sigmoid_pair(logits)
    bce = -(y * -np.logaddexp(0.0, -logits) + (1.0 - y) * -np.logaddexp(0.0, logits))
    one_minus_p_t = y * one_minus_p + (1.0 - y) * p
    alpha_t = alpha * y + (1.0 - alpha) * (1.0 - y)
    return float(np.mean(alpha_t * one_minus_p_t**gamma * bce))


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    return rng.normal(scale=3.0, size=(32, 6)), (rng.random((32, 6)) < 0.3).astype(np.float64)


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_bce_with_smoothing_is_bce_on_soft_targets(batch, eps):
    logits, targets = batch
    pos_weight = np.array([1.0, 2.0, 3.0, 1.0, 0.5, 4.0])
    loss = BinaryCrossEntropy(pos_weight=list(pos_weight), label_smoothing=eps)
    value = loss(torch.tensor(logits), torch.tensor(targets)).item()
    assert value == pytest.approx(np_bce(logits, np_soft(targets, eps), pos_weight), rel=1e-5)
    assert value != pytest.approx(np_bce(logits, targets, pos_weight), rel=1e-3)


@pytest.mark.parametrize(("gamma_neg", "gamma_pos", "clip"), [(4.0, 0.0, 0.05), (2.0, 1.0, 0.2), (0.0, 0.0, 0.0)])
def test_asymmetric_with_smoothing_is_the_formula_on_soft_targets(batch, gamma_neg, gamma_pos, clip):
    logits, targets = batch
    loss = AsymmetricLoss(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, label_smoothing=0.1)
    value = loss(torch.tensor(logits), torch.tensor(targets)).item()
    assert value == pytest.approx(np_asl(logits, np_soft(targets, 0.1), gamma_neg, gamma_pos, clip), rel=1e-5)


@pytest.mark.parametrize(("gamma", "alpha"), [(2.0, 0.25), (0.5, 0.75)])
def test_focal_with_smoothing_is_torchvisions_soft_target_form(batch, gamma, alpha):
    logits, targets = batch
    value = FocalLoss(gamma=gamma, alpha=alpha, label_smoothing=0.1)(torch.tensor(logits), torch.tensor(targets))
    assert value.item() == pytest.approx(np_focal_soft(logits, np_soft(targets, 0.1), gamma, alpha), rel=1e-5)


@pytest.mark.parametrize("loss", [BinaryCrossEntropy(label_smoothing=0.2),
                                  AsymmetricLoss(gamma_neg=0.0, clip=0.0, label_smoothing=0.2)], ids=["bce", "asl"])
def test_smoothing_moves_the_minimiser_to_the_soft_target(loss):
    """Without focusing, one element's loss over a grid of logits is lowest where p = 1 - eps/2 (positive) and
    p = eps/2 (negative), not at +-infinity."""
    grid = torch.linspace(-8, 8, 16001, dtype=torch.float64)[:, None]
    for target, best_p in ((1.0, 0.9), (0.0, 0.1)):
        values = torch.stack([loss(x[None], torch.full((1, 1), target)) for x in grid])
        assert torch.sigmoid(grid[values.argmin()]).item() == pytest.approx(best_p, abs=1e-3)


def test_focal_refuses_smoothing_in_its_softmax_form_and_says_what_to_use():
    multiclass = LabelSpace("multiclass", ("a", "b", "c"), (3, 4, 5), 12)
    with pytest.raises(ConfigError, match=r"loss=ce loss.label_smoothing"):
        build_loss(functools.partial(FocalLoss, label_smoothing=0.1), multiclass)
    with pytest.raises(ConfigError, match=r"loss=ce loss.label_smoothing"):
        build_loss(functools.partial(ClassBalancedLoss, functools.partial(FocalLoss, label_smoothing=0.1)), multiclass)


@pytest.mark.parametrize("eps", [-0.1, 1.0])
@pytest.mark.parametrize("loss", [BinaryCrossEntropy, AsymmetricLoss, FocalLoss])
def test_out_of_range_smoothing_is_refused(loss, eps):
    with pytest.raises(ConfigError, match=r"loss.label_smoothing must be in \[0, 1\)"):
        loss(label_smoothing=eps)


def test_the_config_option_reaches_the_loss_also_nested(tmp_path):
    labels = LabelSpace("multilabel", ("a", "b"), (3, 4), 12)
    for overrides, path in ((["loss=asymmetric", "loss.label_smoothing=0.1"], ()),
                            (["loss.multilabel.label_smoothing=0.1"], ("multilabel",)),
                            (["loss=class_balanced", "loss.base.label_smoothing=0.1"], ("base",))):
        cfg = compose_train(tmp_path, overrides)
        loss = build_loss(instantiate(cfg.loss), labels)
        inner = loss if path != ("base",) else loss.base
        assert inner.label_smoothing == 0.1, overrides
