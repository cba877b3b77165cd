"""Readable run names from the command-line overrides that define a job."""

from __future__ import annotations

# Overrides that say where things are or how progress shows, not what was run: they do not belong in a run name.
# Callbacks that change training or the checkpoint chosen (ema, early_stopping, gradual_unfreezing, the monitored
# metric) do: two sweeps that differ only in one are two groups in src.compare, not one.
_NOT_IN_NAME = (
    "hydra.",
    "paths.",
    "data.source.data_dir",
    "data.source.train",
    "data.source.val",
    "data.source.test",
    "ckpt_path",
    "logger.",
    "callbacks.progress_bar",
    "callbacks.lr_monitor",
    "callbacks.periodic_checkpoint",
    "callbacks.model_checkpoint.dirpath",
    "callbacks.model_checkpoint.filename",
    "callbacks.model_checkpoint.save_last",
    "callbacks.model_checkpoint.save_weights_only",
    "callbacks.training_health.max_train_val_gap",
    "trial.",
    "task_name",
    "trainer.enable_progress_bar",
)


def describes_run(key: str) -> bool:
    """Whether an override's key changes what is trained or measured (``loss``), not where things are or how progress
    shows (``paths.root_dir``, ``trainer.enable_progress_bar``)."""
    return not key.startswith(_NOT_IN_NAME)


def override_key(override: str) -> str:
    """``"+loss.gamma=2"`` -> ``"loss.gamma"``."""
    return override.lstrip("+~").split("=", 1)[0]


def swept_keys(argv: list[str]) -> list[str]:
    """Keys given several values on a --multirun command line (``loss=bce,ce`` -> ``["loss"]``; also
    ``range(...)``, ``choice(...)``), in command-line order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    candidates = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    parsed = OverridesParser.create().parse_overrides(candidates)
    return [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]


def run_name(overrides: list[str], only: set[str] | None = None) -> str:
    """``["loss=ce", "seed=2", "paths.root_dir=/x"]`` -> ``"loss=ce seed=2"``; with ``only``, just those keys;
    ``"defaults"`` when nothing is left."""
    kept = [
        item.lstrip("+~")
        for item in overrides
        if describes_run(override_key(item)) and (only is None or override_key(item) in only)
    ]
    return " ".join(kept) or "defaults"
