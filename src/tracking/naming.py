"""Readable run names from the command-line overrides that define a job."""

from __future__ import annotations

import sys

# Overrides that say where things are, not what was run: they do not belong in a run name.
_NOT_IN_NAME = (
    "hydra.",
    "paths.",
    "data.data_dir",
    "data.train",
    "data.val",
    "data.test",
    "ckpt_path",
    "logger.",
    "callbacks.",
)


def _key(override: str) -> str:
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
        if not _key(item).startswith(_NOT_IN_NAME) and (only is None or _key(item) in only)
    ]
    return " ".join(kept) or "defaults"


def hydra_run_name() -> str:
    """The current Hydra job's name: its overrides, or in a sweep only the swept ones (``defaults`` outside a
    Hydra app, e.g. the compose API)."""
    from hydra.core.hydra_config import HydraConfig

    from src.tracking.sweep import current_sweep, in_multirun  # sweep imports this module

    if not HydraConfig.initialized():
        return "defaults"
    only = None
    if in_multirun():  # the parent record's keys: a joblib/SLURM worker's sys.argv is not the sweep's
        sweep = current_sweep()
        only = set(sweep["swept_keys"] if sweep else swept_keys(sys.argv[1:]))
    return run_name(list(HydraConfig.get().overrides.task), only)
