"""The ``lw.*`` OmegaConf resolvers the configs use; every entry point registers them before composing."""

from omegaconf import OmegaConf

from src.runtime import fast_precision, pad_multiple
from src.tracking.sweep import hydra_run_name


def register() -> None:
    OmegaConf.register_new_resolver("lw.run_name", hydra_run_name, replace=True)
    OmegaConf.register_new_resolver("lw.fast_precision", fast_precision, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("lw.pad_multiple", pad_multiple, replace=True, use_cache=True)
