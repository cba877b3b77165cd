"""labelwise: Hydra-configured fine-tuning of transformer text classifiers for many-label, multi-label, imbalanced
data."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _config_path() -> str:
    """Where Hydra finds the configs: the checkout's ``conf/`` beside ``src/``, or the copy a wheel installs as the
    package ``src.conf``."""
    checkout = Path(__file__).resolve().parent.parent / "conf"
    return str(checkout) if (checkout / "train.yaml").is_file() else "pkg://src.conf"


CONFIG_PATH = _config_path()

try:
    __version__ = version("labelwise")
except PackageNotFoundError:  # run from a checkout that was never installed
    __version__ = "0+unknown"
