"""The Hydra configs, installed as the package src.conf (see pyproject.toml)."""
