"""labelwise's Hydra sweeper plugin (``hydra/sweeper=labelwise_optuna``, used by ``hparams_search=optuna``).

Hydra instantiates sweepers and launchers only from the ``hydra_plugins`` namespace package, so this is installed
as ``hydra_plugins.labelwise_sweeper`` (pyproject.toml maps src/plugins/hydra_plugins). Without installing the
project, ``PYTHONPATH=src/plugins`` exposes it, and nothing else.
"""
