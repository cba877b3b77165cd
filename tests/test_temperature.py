"""calibration=temperature end to end: fitted on val during fit, stored with the checkpoint, applied by every
consumer of the model (eval-mode forward), never in training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from src.inference import Predictor
from src.labels import LabelSpace
from src.metrics.calibration import fit_temperature
from src.models.build import classifier
from src.tracking.checkpoint import read_metadata
from src.train import train
from tests.helpers import compose_train, quick, write_dataset


def test_eval_mode_divides_the_logits_training_does_not(tiny_bert):
    net = classifier(tiny_bert, labels=LabelSpace("multilabel", ("a", "b", "c")), max_length=32)
    batch = {"input_ids": torch.tensor([[2, 7, 9, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    net.eval()
    raw = net(**batch).logits
    net.config.temperature = [2.0, 4.0, 0.5]
    assert torch.allclose(net(**batch).logits, raw / torch.tensor([2.0, 4.0, 0.5]))
    net.train()
    for module in net.modules():  # dropout off: train mode must give the raw logits
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    assert torch.allclose(net(**batch).logits, raw, atol=1e-6)


def test_fitted_temperature_is_stored_and_calibrates_the_final_scores(tmp_path, tiny_bert):
    """Refitting a temperature on the best checkpoint's calibrated val scores finds nothing left to correct
    (T = 1), and a Predictor built from the checkpoint gives those same scores."""
    paths = write_dataset(tmp_path, multilabel=True)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, "calibration=temperature", "calibration.per_label=false"))
    summary = train(cfg)

    temperature = summary["temperature"]
    assert len(temperature) == 3 and len(set(temperature)) == 1 and temperature[0] > 0
    assert read_metadata(summary["best_checkpoint"])["net_config"]["temperature"] == temperature
    saved = np.load(tmp_path / "run" / "report" / "predictions_val.npz")
    scores = np.clip(saved["scores"].astype(np.float64), 1e-6, 1 - 1e-6)
    refit = fit_temperature(np.log(scores / (1 - scores)), saved["targets"], exclusive=False, per_label=False)
    assert refit[0] == pytest.approx(1.0, abs=1e-2)  # bf16 scores where the CPU has native bf16

    texts = [json.loads(line)["text"] for line in paths["val"].read_text().splitlines()]
    predictor = Predictor.from_checkpoint(summary["best_checkpoint"])
    calibrated = predictor.scores(texts, precision="32-true")
    assert np.allclose(calibrated, saved["scores"], atol=1e-2)  # fp32 here, bf16 in the run
    predictor.net.config.temperature = None
    raw = predictor.scores(texts, precision="32-true")
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert np.allclose(logit(calibrated) * temperature[0], logit(raw), atol=1e-3)
