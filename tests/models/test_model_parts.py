"""Pooling, the AdamW parameter groups, the warm-up schedules and the classifier's shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from src.labels import LabelSpace
from src.models.build import classifier as build_classifier
from src.models.modeling_labelwise import pool
from src.models.optimization import adamw, warmup_schedule

LABELS = ["joy", "anger", "fear"]


# ---------------------------------------------------------------- pool

# two sequences of three tokens, hidden width 2; the second sequence has two padding positions
HIDDEN = torch.tensor(
    [
        [[1.0, 2.0], [3.0, 6.0], [100.0, -100.0]],
        [[-2.0, 4.0], [50.0, 50.0], [70.0, 70.0]],
    ]
)
MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])
POOLER = torch.tensor([[0.1, 0.2], [0.3, 0.4]])


def test_pool_mean_ignores_padding():
    # sequence 0: mean of (1, 2) and (3, 6) = (2, 4); sequence 1: only (-2, 4)
    got = pool(HIDDEN, MASK, POOLER, "mean")
    assert got.tolist() == [[2.0, 4.0], [-2.0, 4.0]]


def test_pool_mean_with_float_mask_and_empty_row_is_finite():
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    got = pool(HIDDEN, mask, None, "mean")
    assert got[0].tolist() == pytest.approx([104 / 3, -92 / 3])
    assert got[1].tolist() == [0.0, 0.0]  # an all-padding row gives zeros, not NaN


def test_pool_cls():
    assert pool(HIDDEN, MASK, POOLER, "cls").tolist() == [[1.0, 2.0], [-2.0, 4.0]]


def test_pool_cls_mean_concatenates_cls_then_mean():
    got = pool(HIDDEN, MASK, POOLER, "cls_mean")
    assert got.shape == (2, 4)
    assert got.tolist() == [[1.0, 2.0, 2.0, 4.0], [-2.0, 4.0, -2.0, 4.0]]


def test_pool_pooler_returns_the_pooler_output():
    assert pool(HIDDEN, MASK, POOLER, "pooler") is POOLER


# ---------------------------------------------------------------- AdamW groups


@pytest.fixture(scope="module")
def classifier(tiny_bert):
    return build_classifier(tiny_bert, labels=LabelSpace("multilabel", tuple(LABELS)))


def _no_decay_by_name(name: str) -> bool:
    """The usual transformers rule, written by name rather than by shape."""
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name


def test_adamw_groups(classifier):
    optimizer = adamw(encoder=classifier.encoder, head=classifier.head, lr=2e-4, weight_decay=0.05,
                      head_lr_multiplier=10.0, betas=[0.8, 0.99], eps=1e-7)
    assert isinstance(optimizer, torch.optim.AdamW)

    placed: dict[int, dict] = {}
    for group in optimizer.param_groups:
        assert group["betas"] == (0.8, 0.99)
        assert group["eps"] == 1e-7
        for param in group["params"]:
            assert id(param) not in placed, "a parameter is in two groups"
            placed[id(param)] = group

    expected_lr = {}
    for prefix, module, lr in (("encoder", classifier.encoder, 2e-4), ("head", classifier.head, 2e-3)):
        for name, param in module.named_parameters():
            expected_lr[id(param)] = (f"{prefix}.{name}", lr)
    assert set(placed) == set(expected_lr), "every parameter in exactly one group"
    assert len(placed) == len(list(classifier.parameters()))

    decayed = no_decay = 0
    for key, (name, lr) in expected_lr.items():
        group = placed[key]
        assert group["lr"] == pytest.approx(lr), name
        if _no_decay_by_name(name):
            assert group["weight_decay"] == 0.0, name
            no_decay += 1
        else:
            assert group["weight_decay"] == 0.05, name
            decayed += 1
    assert decayed > 0 and no_decay > 0
    # the head is one Linear: its weight decays, its bias does not
    head_linear = classifier.head.out_proj
    assert placed[id(head_linear.weight)]["weight_decay"] == 0.05
    assert placed[id(head_linear.bias)]["weight_decay"] == 0.0
    assert placed[id(head_linear.bias)]["lr"] == pytest.approx(2e-3)


def test_adamw_skips_frozen_parameters():
    encoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    head = nn.Linear(4, 2)
    encoder[0].weight.requires_grad_(False)
    optimizer = adamw(encoder=encoder, head=head, lr=1e-3, head_lr_multiplier=1.0)
    in_groups = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(in_groups) == 5  # encoder bias, LayerNorm weight + bias, head weight + bias
    assert not any(p is encoder[0].weight for p in in_groups)
    assert all(group["params"] for group in optimizer.param_groups), "no empty groups"


# ---------------------------------------------------------------- schedules


def lr_after_steps(name: str, total: int, ratio: float) -> list[float]:
    """The learning rate (base lr 1.0) after 0, 1, ..., total scheduler steps."""
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    config = warmup_schedule(optimizer, total_steps=total, name=name, warmup_ratio=ratio)
    assert config["interval"] == "step" and config["frequency"] == 1
    scheduler = config["scheduler"]
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(total):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_linear_warmup_then_linear_decay():
    # total 30, ratio 0.1 -> 3 warm-up steps; then (30 - k) / 27
    lrs = lr_after_steps("linear", 30, 0.1)
    assert lrs[0] == 0.0
    assert lrs[1] == pytest.approx(1 / 3)
    assert lrs[2] == pytest.approx(2 / 3)
    assert lrs[3] == pytest.approx(1.0)
    assert lrs[12] == pytest.approx(18 / 27)
    assert lrs[21] == pytest.approx(9 / 27)
    assert lrs[29] == pytest.approx(1 / 27)
    assert lrs[30] == pytest.approx(0.0, abs=1e-12)


def test_linear_warmup_steps_are_rounded():
    # total 25, ratio 0.12 -> round(3.0) = 3 warm-up steps; ratio 0.15 -> round(3.75) = 4
    assert lr_after_steps("linear", 25, 0.12)[3] == pytest.approx(1.0)
    lrs = lr_after_steps("linear", 25, 0.15)
    assert lrs[3] == pytest.approx(3 / 4)
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(20 / 21)


def test_cosine_peaks_after_warmup_and_reaches_zero():
    # total 23, ratio 0.13 -> round(2.99) = 3 warm-up steps, 20 decay steps; half-way (step 13) -> 0.5
    lrs = lr_after_steps("cosine", 23, 0.13)
    assert lrs[:4] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == 3
    assert lrs[13] == pytest.approx(0.5)
    assert lrs[8] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 20)))
    assert lrs[23] == pytest.approx(0.0, abs=1e-12)
    decay = lrs[3:]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_no_warmup():
    lrs = lr_after_steps("linear", 10, 0.0)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.5)
