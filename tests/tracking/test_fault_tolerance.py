"""Mid-epoch fault tolerance: a run stopped in the middle of an epoch and resumed from its periodic checkpoint ends
with the same weights and metrics as the run that was never stopped (same batches, same dropout masks)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from src.train import train
from tests.helpers import compose_train, quick, write_dataset

STOP_AT = 9  # epoch 1 (6 batches of 16 per epoch), batch 3


class Stop(L.Callback):
    """Fails the run after ``step`` optimizer steps, as a crash would (the periodic checkpoint of the step before is
    on disk: checkpoint callbacks run after this one)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


class FinalState(L.Callback):
    def on_fit_end(self, trainer, pl_module) -> None:
        self.weights = {key: value.detach().clone() for key, value in pl_module.state_dict().items()}
        self.metrics = {key: float(value) for key, value in trainer.callback_metrics.items()
                        if key.startswith("val/")}
        self.step = trainer.global_step


def test_resume_mid_epoch_matches_the_uninterrupted_run(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True)
    args = quick(tiny_bert, paths, "trainer.max_epochs=2", "logger=none", "callbacks.early_stopping=null",
                 "callbacks.periodic_checkpoint.train_time_interval=0", "model.dropout=0.3", "report=false")
    uninterrupted = FinalState()
    expected = train(compose_train(tmp_path / "a", args), extra_callbacks=[uninterrupted])

    with pytest.raises(RuntimeError, match="crash"):
        train(compose_train(tmp_path / "b", args), extra_callbacks=[Stop(STOP_AT)])
    periodic = tmp_path / "b" / "run" / "checkpoints" / "periodic.ckpt"
    checkpoint = torch.load(periodic, weights_only=True)
    assert checkpoint["global_step"] == STOP_AT - 1 and checkpoint["epoch"] == 1  # mid-epoch 1
    resumed = FinalState()
    summary = train(compose_train(tmp_path / "b", [*args, f"ckpt_path={periodic}"]), extra_callbacks=[resumed])

    assert resumed.step == uninterrupted.step
    assert resumed.weights.keys() == uninterrupted.weights.keys()
    for key, value in uninterrupted.weights.items():
        torch.testing.assert_close(resumed.weights[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert resumed.metrics == pytest.approx(uninterrupted.metrics, abs=1e-6)
    for split in ("val", "test"):
        numbers = {k: v for k, v in expected["metrics"][split].items() if isinstance(v, float)}
        assert {k: summary["metrics"][split][k] for k in numbers} == pytest.approx(numbers, abs=1e-6)
    largest = max(float((resumed.weights[k].float() - v.float()).abs().max()) for k, v in uninterrupted.weights.items())
    print(f"\nuninterrupted: {expected['metrics']['val']['macro_f1']:.6f} val / "
          f"{expected['metrics']['test']['macro_f1']:.6f} test macro-F1; resumed at step {STOP_AT - 1}: "
          f"{summary['metrics']['val']['macro_f1']:.6f} / {summary['metrics']['test']['macro_f1']:.6f}; "
          f"largest weight difference {largest:.1e}")
    assert not periodic.exists()  # removed once fit ended
