"""The ``lw.*`` OmegaConf resolvers the configs use; every entry point registers them before composing."""

from omegaconf import OmegaConf

from src.precision import fast_precision
from src.tracking.naming import hydra_run_name


def register() -> None:
    OmegaConf.register_new_resolver("lw.run_name", hydra_run_name, replace=True)
    OmegaConf.register_new_resolver("lw.fast_precision", fast_precision, replace=True, use_cache=True)
