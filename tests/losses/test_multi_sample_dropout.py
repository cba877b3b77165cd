"""Multi-sample dropout: one training step against a recomputation from the same dropout masks (one encoder pass,
the head under K masks, losses averaged), and a run without dropout that trains exactly like one without it."""

from __future__ import annotations

import pytest
import torch

from src.labels import LabelSpace
from src.losses.asymmetric import AsymmetricLoss
from src.models.build import classifier
from src.models.module import ClassifierModule
from tests.helpers import assert_same_fit_without_dropout, run_cli


def test_a_step_averages_the_losses_of_k_head_masks_on_one_encoder_pass(tiny_bert):
    labels = LabelSpace("multilabel", ("a", "b", "c"))
    asl = AsymmetricLoss()
    module = ClassifierModule(classifier(tiny_bert, labels=labels, dropout=0.3), labels, loss=asl,
                              dropout_samples=4)
    module.train()
    batch = {"input_ids": torch.randint(1000, 2000, (4, 6)), "attention_mask": torch.ones(4, 6, dtype=torch.long),
             "labels": torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 1], [1, 1, 0]], dtype=torch.float32)}
    torch.manual_seed(5)
    got = module.training_step(batch, 0)
    torch.manual_seed(5)
    with torch.no_grad():
        pooled = module.net.embed(batch["input_ids"], batch["attention_mask"])  # the encoder's masks, drawn once
        heads = [module.net.head(pooled) for _ in range(4)]
    assert not torch.allclose(heads[0], heads[1])  # four masks, not one
    expected = sum(asl(logits, batch["labels"]).item() for logits in heads) / 4
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_without_dropout_it_trains_like_a_plain_run(tmp_path, tiny_bert):
    """With every dropout at 0 the K head passes agree, so the averaged loss is the plain one: the weights after a
    real fit match a fit with dropout_samples=1."""
    assert_same_fit_without_dropout(tmp_path, tiny_bert, "dropout_samples=1", "dropout_samples=3")


@pytest.mark.parametrize(("override", "expected"), [
    ("dropout_samples=0", "dropout_samples=0: must be"),
    ("rdrop=0.5", "dropout_samples=4 with rdrop=0.5: R-Drop already runs each batch under two dropout masks"),
])
def test_bad_settings_are_one_clear_message(tmp_path, override, expected):
    extra = [] if override.startswith("dropout_samples") else ["dropout_samples=4"]
    result = run_cli(tmp_path, override, *extra, check=False)
    assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr
