"""An exponential moving average of the weights (Lightning's ``EMAWeightAveraging``), for labelwise's pipeline.

Lightning's callback validates and checkpoints the averaged weights (each checkpoint's ``state_dict`` is the average,
so the best checkpoint, its Predictor, eval, export and the thresholds all see the averaged model). After ``fit`` it
would keep swapping its final average into every later ``validate`` of the same Trainer, so the summary's val row
would score the last epoch's average instead of the best checkpoint: it lets go of the average when fit ends.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging

from src.errors import ConfigError


class WeightEMA(EMAWeightAveraging):
    """``decay`` per optimizer step (0.998 forgets a step's weights with a half-life of ~350 steps)."""

    def __init__(self, decay: float = 0.998, update_every_n_steps: int = 1, update_starting_at_step: int | None = None):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise ConfigError(f"callbacks.ema.decay must be a number in (0, 1), got {decay!r}")
        # use_buffers=False: averaging buffers would lerp integer ones too (position_ids: 0.9 * 5 + 0.1 * 5 stored in
        # int64 can truncate to 4), corrupting the positions the validated and shipped models see; ours are constants
        super().__init__(decay=float(decay), update_every_n_steps=update_every_n_steps,
                         update_starting_at_step=update_starting_at_step, use_buffers=False)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._average_model = None
