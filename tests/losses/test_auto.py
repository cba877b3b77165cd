"""loss=auto (the default): asymmetric loss on multi-label data, cross-entropy on multi-class, each with its own
nested settings; the numbers equal the chosen loss's numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from src.labels import LabelSpace
from src.losses.asymmetric import AsymmetricLoss
from src.losses.base import build_loss
from src.losses.ce import CrossEntropy
from tests.helpers import compose_train, np_ce, one_hot


@pytest.mark.parametrize(("task", "expected"), [("multilabel", AsymmetricLoss), ("multiclass", CrossEntropy)])
def test_the_default_loss_follows_the_task(tmp_path, task, expected):
    cfg = compose_train(tmp_path, ["loss.multilabel.gamma_neg=2", "loss.multiclass.label_smoothing=0.1"])
    assert cfg.loss._target_ == "src.losses.auto.by_task"
    loss = build_loss(instantiate(cfg.loss), LabelSpace(task, ("a", "b", "c"), (5, 3, 1), 8))
    assert type(loss) is expected
    if task == "multilabel":
        assert (loss.gamma_neg, loss.gamma_pos, loss.clip) == (2.0, 0.0, 0.05)
        return
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    classes = [0, 2]
    got = loss(logits, torch.as_tensor(one_hot(classes, 3), dtype=torch.float32))
    assert float(got) == pytest.approx(np_ce(logits.numpy(), np.array(classes), smoothing=0.1), rel=1e-6)
