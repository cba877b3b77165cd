"""The search space: Hydra sweep expressions -> Optuna distributions, and a sampled value -> a job override.

The grammar is Hydra's own override grammar (as on the command line)::

    optim.lr: tag(log, interval(1e-5, 3e-4))   -> FloatDistribution(1e-05, 0.0003, log=True)
    optim.weight_decay: interval(0, 0.1)       -> FloatDistribution(0.0, 0.1)      (interval is always float)
    loss.gamma_neg: range(0, 6)                -> IntDistribution(0, 5)            (range excludes its stop)
    optim.head_lr_multiplier: choice(1, 10, 30) -> CategoricalDistribution((1, 10, 30))
    trainer.max_epochs: 3                      -> fixed for every trial

Imported only when a search runs: it needs Optuna, and Hydra imports no ``_``-prefixed plugin module at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import CompactHydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


class SearchSpaceError(CompactHydraException):
    """A search space Optuna cannot sample (Hydra prints just the message)."""


def parse(params: Mapping[str, str], arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The search space and the overrides fixed for every trial, from ``hydra.sweeper.params`` and the command
    line's overrides. On the command line a plain ``key=value`` is fixed and takes ``key`` out of the space; an
    explicit ``choice``/``range``/``interval`` joins the space or replaces that key's entry; a comma list is a
    grid, which a search does not run, so it is refused."""
    parser = OverridesParser.create()
    by_key: dict[str, Override] = {}
    for override in parser.parse_overrides([f"{key}={value}" for key, value in params.items()]):
        by_key[override.key_or_group] = override
    for override in parser.parse_overrides(list(arguments)):
        value = override.value()
        if isinstance(value, ChoiceSweep) and value.simple_form:
            raise SearchSpaceError(
                f"'{override.input_line}' is a grid, and an Optuna search samples instead of running a grid: "
                f"write {override.key_or_group}=choice({override.input_line.split('=', 1)[1]}) to search over it, "
                "or run the grid without hparams_search."
            )
        by_key[override.key_or_group] = override  # the command line's value replaces the configured one
    space = {o.get_key_element(): distribution(o) for o in by_key.values() if o.is_sweep_override()}
    fixed = [o.input_line for o in by_key.values() if not o.is_sweep_override()]
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    value = override.value()
    if "log" in getattr(value, "tags", ()) and not isinstance(value, IntervalSweep):
        raise SearchSpaceError(f"'{override.input_line}': tag(log, ...) applies to interval(...) only.")
    if isinstance(value, IntervalSweep):
        return FloatDistribution(value.start, value.end, log="log" in value.tags)
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise SearchSpaceError(f"'{override.input_line}' is an empty range.")
        low, high, step = min(values), max(values), abs(value.step)
        if all(isinstance(v, int) for v in (*values, step)):
            return IntDistribution(low, high, step=step)
        return FloatDistribution(low, high, step=step)
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    raise SearchSpaceError(f"'{override.input_line}': a search space takes choice, range and interval only.")


def job_override(key: str, value: object) -> str:
    """``key=value`` for a job. Floats keep 4 significant digits, so run names stay readable
    (``optim.lr=0.0001234``); the job runs with exactly that value, and Optuna's record keeps the full sample."""
    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={Transformer.str(value)}"
