"""The ``lw.*`` OmegaConf resolvers the configs use; every entry point registers them before composing."""

import os
from datetime import datetime

from omegaconf import OmegaConf

from src.runtime import fast_precision, pad_multiple
from src.tracking.sweep import hydra_run_name


def unique_time(now: datetime | None = None) -> str:
    """``10-03-00.123-48211``: the time to the millisecond and this process's id, so runs started in the same second
    (parallel starts, a job array) never share a run directory, while directory names still sort by start time."""
    now = now or datetime.now()
    return f"{now:%H-%M-%S}.{now.microsecond // 1000:03d}-{os.getpid()}"


def register() -> None:
    OmegaConf.register_new_resolver("lw.run_name", hydra_run_name, replace=True)
    OmegaConf.register_new_resolver("lw.fast_precision", fast_precision, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("lw.pad_multiple", pad_multiple, replace=True, use_cache=True)
    # cached: every read of hydra.run.dir / hydra.sweep.dir in one config gives the same directory
    OmegaConf.register_new_resolver("lw.unique_time", unique_time, replace=True, use_cache=True)
