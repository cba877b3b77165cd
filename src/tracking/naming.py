"""Readable run names from the command-line overrides that define a job."""

from __future__ import annotations

# Overrides that say where things are, not what was run: they do not belong in a run name.
_NOT_IN_NAME = ("hydra.", "paths.", "data.data_dir", "data.source.data_dir", "ckpt_path", "logger.", "callbacks.")


def run_name(overrides: list[str]) -> str:
    """``["loss=ce", "seed=2", "paths.root_dir=/x"]`` -> ``"loss=ce seed=2"``; ``"defaults"`` when empty."""
    kept = [item.lstrip("+~") for item in overrides if not item.lstrip("+~").startswith(_NOT_IN_NAME)]
    return " ".join(kept) or "defaults"


def hydra_run_name() -> str:
    """The run name of the current Hydra job (``defaults`` outside a Hydra app, e.g. the compose API)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "defaults"
    return run_name(list(HydraConfig.get().overrides.task))
