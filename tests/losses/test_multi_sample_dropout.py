"""Multi-sample dropout: one training step against a recomputation from the same dropout masks (one encoder pass,
the head under K masks, losses averaged), and a run without dropout that trains exactly like one without it."""

from __future__ import annotations

import pytest
import torch

from src.labels import LabelSpace
from src.losses.asymmetric import AsymmetricLoss
from src.models.build import classifier
from src.models.module import ClassifierModule
from src.train import train
from tests.helpers import compose_train, quick, run_cli, write_dataset


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
    paths = write_dataset(tmp_path, multilabel=True)
    no_dropout = ("model.dropout=0",
                  "model.encoder_overrides={hidden_dropout_prob: 0, attention_probs_dropout_prob: 0}",
                  "trainer.precision=32-true", "trainer.max_epochs=2", "logger=csv", "report=false")
    weights = []
    for samples in (1, 3):
        cfg = compose_train(tmp_path / str(samples), quick(tiny_bert, paths, *no_dropout, f"dropout_samples={samples}"))
        state = torch.load(train(cfg)["best_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
        weights.append(state)
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        torch.testing.assert_close(weights[1][key], weights[0][key], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(("override", "expected"), [
    ("dropout_samples=0", "dropout_samples=0: must be"),
    ("rdrop=0.5", "dropout_samples=4 with rdrop=0.5: R-Drop already runs each batch under two dropout masks"),
])
def test_bad_settings_are_one_clear_message(tmp_path, override, expected):
    extra = [] if override.startswith("dropout_samples") else ["dropout_samples=4"]
    result = run_cli(tmp_path, override, *extra, check=False)
    assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr
