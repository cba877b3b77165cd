"""R-Drop: the symmetric KL against scipy's definition, one training step against a recomputation from the same
dropout masks, and a run without dropout that trains exactly like one without R-Drop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, rel_entr, softmax

from src.distill import Distillation
from src.labels import LabelSpace
from src.losses.asymmetric import AsymmetricLoss
from src.losses.rdrop import symmetric_kl
from src.models.build import classifier
from src.models.module import ClassifierModule
from tests.helpers import assert_same_fit_without_dropout


def reference(a: np.ndarray, b: np.ndarray, exclusive: bool) -> float:
    """(KL(p||q) + KL(q||p)) / 2 from the definition, float64: per label over {yes, no}, or per row over classes."""
    if exclusive:
        p, q = softmax(a, -1), softmax(b, -1)
        return float(0.5 * (rel_entr(p, q) + rel_entr(q, p)).sum(-1).mean())
    p, q = expit(a), expit(b)
    forward = rel_entr(p, q) + rel_entr(1 - p, 1 - q)
    backward = rel_entr(q, p) + rel_entr(1 - q, 1 - p)
    return float(0.5 * (forward + backward).mean())


@pytest.mark.parametrize("exclusive", [False, True], ids=["sigmoid", "softmax"])
def test_symmetric_kl_matches_the_definition(exclusive):
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 3, (7, 5)), rng.normal(0, 3, (7, 5))
    got = symmetric_kl(torch.tensor(a), torch.tensor(b), exclusive).item()
    assert got == pytest.approx(reference(a, b, exclusive), rel=1e-5)
    assert symmetric_kl(torch.tensor(a), torch.tensor(a), exclusive).item() == 0.0


def test_symmetric_kl_stays_finite_at_saturated_scores():
    a = torch.tensor([[40.0, -40.0]], requires_grad=True)
    value = symmetric_kl(a, torch.tensor([[-40.0, 40.0]]), exclusive=False)
    value.backward()
    assert torch.isfinite(value) and value.item() == pytest.approx(40.0, rel=1e-6)  # (p - q) (a - b) / 2 = 1 * 80 / 2
    assert torch.isfinite(a.grad).all()


@pytest.mark.parametrize("distill", [False, True], ids=["plain", "distilled"])
def test_a_step_averages_both_passes_and_adds_their_disagreement(tiny_bert, distill):
    """The step's loss, recomputed from one forward of the doubled batch under the same random stream: the mean of
    the two halves' task losses plus alpha times the scipy KL between them; the halves really differ (two masks).
    Under distillation each half's task loss is mixed with its own distance to the teacher."""
    labels = LabelSpace("multilabel", ("a", "b", "c"))
    asl = AsymmetricLoss()
    module = ClassifierModule(classifier(tiny_bert, labels=labels, dropout=0.3), labels, loss=asl, rdrop=2.0)
    loss = asl
    if distill:
        teacher = Distillation("unused.ckpt", alpha=0.4, temperature=2.0)
        teacher.logits = torch.tensor(np.random.default_rng(1).normal(0, 2, (4, 3)), dtype=torch.float32)
        module.distill = teacher.mix

        def loss(logits, targets):  # (1 - alpha) task + alpha T^2 BCE(sigmoid(s/T), sigmoid(t/T)), from scipy
            s, t = logits.double().numpy() / 2.0, teacher.logits.double().numpy() / 2.0
            kd = -np.mean(expit(t) * np.log(expit(s)) + (1 - expit(t)) * np.log(expit(-s)))
            return 0.6 * asl(logits, targets) + 0.4 * 4.0 * kd
    module.train()
    batch = {"input_ids": torch.randint(1000, 2000, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long),
             "labels": torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.float32),
             "index": torch.arange(4)}
    torch.manual_seed(3)
    got = module.training_step(batch, 0)
    torch.manual_seed(3)
    with torch.no_grad():
        doubled = module.net(input_ids=batch["input_ids"].repeat(2, 1),
                             attention_mask=batch["attention_mask"].repeat(2, 1)).logits
    first, second = doubled[:4], doubled[4:]
    assert not torch.allclose(first, second)
    expected = (0.5 * (loss(first, batch["labels"]) + loss(second, batch["labels"])).item()
                + 2.0 * reference(first.double().numpy(), second.double().numpy(), exclusive=False))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_without_dropout_rdrop_trains_like_a_plain_run(tmp_path, tiny_bert):
    """With every dropout at 0 both passes agree, so the KL term is 0 and the loss is the plain one: the weights after
    a real fit match a fit without R-Drop (the doubled batch only reorders floating-point sums)."""
    assert_same_fit_without_dropout(tmp_path, tiny_bert, "rdrop=0.0", "rdrop=1.0")
