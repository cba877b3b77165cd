"""``callbacks.ema``: the checkpoints hold an exponential moving average of the weights (checked against the
average computed by hand from the weights after every optimizer step), and everything after fit (the val row, the
report, the Predictor) is the best checkpoint's averaged model, not the last epoch's average."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from src.callbacks.averaging import WeightEMA
from src.errors import ConfigError
from src.inference import Predictor
from src.train import train
from tests.helpers import compose_train, quick, write_dataset

DECAY = 0.9
EMA = f"callbacks.ema={{_target_: src.callbacks.averaging.WeightEMA, decay: {DECAY}}}"


class Recorder(L.Callback):
    """The head's weight after each optimizer step (Lightning calls this callback after the EMA update, which does
    not touch the live weights)."""

    def __init__(self):
        self.weights: list[np.ndarray] = []
        self.name: str | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        state = pl_module.state_dict()
        self.name = self.name or next(k for k in state if "head" in k and k.endswith("weight"))
        self.weights.append(state[self.name].detach().cpu().numpy().copy())


def fit_with_ema(tmp_path, tiny_bert, *overrides):
    """A run with the EMA, the best checkpoint forced to the first epoch (monitor=epoch, mode=min): best != last."""
    paths = write_dataset(tmp_path, multilabel=True)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, EMA, "trainer.precision=32-true",
                                        "callbacks.model_checkpoint.monitor=epoch",
                                        "callbacks.model_checkpoint.mode=min", "callbacks.early_stopping=null",
                                        *overrides))
    recorder = Recorder()
    summary = train(cfg, extra_callbacks=[recorder])
    return paths, summary, recorder


def moving_average(weights: list[np.ndarray]) -> np.ndarray:
    """The EMA by hand: the first update copies the weights."""
    average = weights[0]
    for step in weights[1:]:
        average = DECAY * average + (1 - DECAY) * step
    return average


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_bert):
    """3 epochs."""
    tmp_path = tmp_path_factory.mktemp("ema")
    return tmp_path, *fit_with_ema(tmp_path, tiny_bert, "logger=csv")


def test_checkpoints_hold_the_moving_average_of_every_step(run):
    tmp_path, _, summary, recorder = run
    average = moving_average(recorder.weights)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    saved = last["state_dict"][recorder.name].numpy()
    np.testing.assert_allclose(saved, average, atol=1e-6)
    assert not np.allclose(saved, recorder.weights[-1], atol=1e-4)  # the average, not the live weights
    assert len(recorder.weights) == 3 * 6  # 96 rows / batch 16, 3 epochs: every step counted once


def test_after_fit_everything_is_the_best_checkpoint(run):
    tmp_path, paths, summary, _ = run
    assert summary["best_checkpoint"].endswith("best-epoch00.ckpt")
    texts = [json.loads(line)["text"] for line in paths["val"].read_text().splitlines()]
    scores = Predictor.from_checkpoint(summary["best_checkpoint"]).scores(texts, batch_size=7, precision="32-true")
    saved = np.load(tmp_path / "run" / "report" / "predictions_val.npz")["scores"]
    np.testing.assert_allclose(scores, saved, atol=1e-5)
    last = Predictor.from_checkpoint(str(tmp_path / "run" / "checkpoints" / "last.ckpt"))
    assert not np.allclose(last.scores(texts, batch_size=7, precision="32-true"), saved, atol=1e-4)


def test_weights_only_checkpoints_hold_the_average_too(tmp_path, tiny_bert):
    """Lightning skips callbacks' checkpoint hooks for weights-only checkpoints, where the EMA puts its average: the
    best checkpoint, chosen by validating the average, would hold the live weights instead."""
    _, summary, recorder = fit_with_ema(tmp_path, tiny_bert, "logger=none", "trainer.max_epochs=2",
                                        "callbacks.model_checkpoint.save_weights_only=true")
    assert summary["best_checkpoint"].endswith("best-epoch00.ckpt")
    average = moving_average(recorder.weights[:6])  # the first epoch's 6 steps
    best = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    np.testing.assert_allclose(best["state_dict"][recorder.name].numpy(), average, atol=1e-6)
    assert not np.allclose(best["state_dict"][recorder.name].numpy(), recorder.weights[5], atol=1e-4)
    assert "optimizer_states" not in best and "current_model_state" not in best  # still weights only


@pytest.mark.parametrize("decay", [0, 1, 1.5, "x", True])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ConfigError, match=r"callbacks.ema.decay must be a number in \(0, 1\)"):
        WeightEMA(decay=decay)


def test_a_bad_decay_on_the_command_line_is_one_error_before_anything_runs(tmp_path):
    from tests.helpers import run_cli

    result = run_cli(tmp_path, "callbacks.ema={_target_: src.callbacks.averaging.WeightEMA, decay: 1.5}", check=False)
    assert result.returncode != 0
    assert "error: callbacks.ema.decay=1.5: must be a number" in result.stderr
    assert "Traceback" not in result.stderr
