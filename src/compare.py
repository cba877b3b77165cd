"""python -m src.compare [sweep=latest|<parent run id>|[<id>,<id>,...]] [metric=test/macro_f1]: rank a sweep's
settings over seeds.

Reads the sweep's jobs from the MLflow store, groups them by their swept settings other than the seed (given several
sweeps, also by the settings that differ between them: a follow-up sweep is compared with the earlier one without
re-running its baseline), aggregates the metric over seeds and tests the best group against each other one: paired
t-test and Wilcoxon signed-rank over the seeds both groups have, with the number of seeds that spread would need to
detect the difference; a paired bootstrap and a paired permutation test over examples where the jobs saved their
predictions, the permutation p-values Holm-corrected across the groups (the best is tested against every other one: a
family of tests). Prints a table, writes ``compare.md``, ``compare.csv`` and ``compare.png`` into the run directory and
logs them to each sweep's parent run under ``compare/``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from src import resolvers
from src.errors import ConfigError, reported_to_user
from src.metrics.statistics import Bootstrap, holm, paired_bootstrap, paired_permutation, paired_tests, seeds_needed
from src.schema import app, validate
from src.tracking.sweep_results import (
    Job,
    find_sweep,
    grouping_keys,
    grouping_keys_across,
    load_predictions,
    sweep_jobs,
)

resolvers.register()

#: ``seeds needed`` above this reads ">1000": the difference is not worth chasing with seeds.
SEEDS_LIMIT = 1000

COLUMNS = ("group", "n", "mean ± std", "min", "max", "Δ vs best", "pairs", "t-test p", "Wilcoxon p", "seeds needed",
           "bootstrap best − group [95% CI]", "bootstrap p", "permutation p", "Holm p")


@dataclass
class Group:
    """One setting of the swept keys, over seeds. The tests compare the best group with this one (None: n/a)."""

    name: str
    values: dict[str | None, float]  # seed -> metric (seed None when the sweep did not set one)
    run_ids: dict[str | None, str]
    pairs: int = 0
    ttest_p: float | None = None
    wilcoxon_p: float | None = None
    seeds_needed: int | None = None
    bootstrap: Bootstrap | None = None
    permutation_p: float | None = None
    holm_p: float | None = None
    bootstrap_seeds: list[str | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values())))

    @property
    def std(self) -> float | None:
        """Sample standard deviation (ddof=1); None for a single seed."""
        return float(np.std(list(self.values.values()), ddof=1)) if self.n > 1 else None

    @property
    def min(self) -> float:
        return min(self.values.values())

    @property
    def max(self) -> float:
        return max(self.values.values())


@dataclass
class Comparison:
    parents: list[tuple[str, str]]  # (run id, run name) of each sweep compared
    metric: str
    higher_is_better: bool
    groups: list[Group]  # ranked, best first
    notes: list[str]
    resamples: int

    @property
    def best(self) -> Group:
        return self.groups[0]


# ---------------------------------------------------------------- statistics


def _seed_order(seed: str | None) -> tuple:
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


# ---------------------------------------------------------------- reading and comparing


def _group_name(job: Job, keys: list[str]) -> str:
    """The job's values of ``keys``; a key it left at its default is not named (``defaults`` when it set none of
    them; ``all`` when nothing was swept but the seed: one group)."""
    if not keys:
        return "all"
    return " ".join(f"{key}={job.settings[key]}" for key in keys if key in job.settings) or "defaults"


def _job_name(job: Job) -> str:
    return " ".join(f"{key}={value}" for key, value in job.settings.items()) or job.run_id


def _groups(jobs: list[Job], keys: list[str], metric: str, notes: list[str]) -> list[Group]:
    """The finished jobs that have ``metric``, by group and seed; the rest are named in ``notes``."""
    finished = [job for job in jobs if job.status == "FINISHED"]
    notes += [f"skipped {job.status} run {job.run_id} ({_job_name(job)})" for job in jobs if job.status != "FINISHED"]
    scored = [job for job in finished if metric in job.metrics]
    if not finished:
        raise ConfigError(f"none of the sweep's {len(jobs)} runs finished: nothing to compare.")
    if not scored:
        available = ", ".join(sorted({name for job in finished for name in job.metrics}))
        raise ConfigError(f"metric={metric}: no finished run of the sweep logged it. They have: {available}.")
    notes += [f"run {job.run_id} ({_job_name(job)}) has no {metric}: left out" for job in finished if job not in scored]
    groups: dict[str, Group] = {}
    for job in scored:  # oldest first: a later run of the same group and seed replaces an earlier one
        name = _group_name(job, keys)
        group = groups.setdefault(name, Group(name, {}, {}))
        if job.seed in group.run_ids:
            notes.append(f"{name} seed={job.seed}: run {job.run_id} replaces the earlier {group.run_ids[job.seed]}")
        group.values[job.seed], group.run_ids[job.seed] = job.metrics[metric], job.run_id
    for group in groups.values():
        order = sorted(group.values, key=_seed_order)
        group.values = {seed: group.values[seed] for seed in order}
        group.run_ids = {seed: group.run_ids[seed] for seed in order}
    return list(groups.values())


def _check_same_data(groups: list[Group], fingerprints: dict[str, str | None], notes: list[str]) -> None:
    """Across sweeps the data location is not a grouping key (the same files under another path are the same data),
    so a note names every seed whose runs, in different groups, trained on different texts or labels."""
    seeds = dict.fromkeys(seed for group in groups for seed in group.run_ids)
    for seed in seeds:
        seen = {fingerprints[group.run_ids[seed]] for group in groups if seed in group.run_ids} - {None}
        if len(seen) > 1:
            notes.append(f"seed={seed}: the groups' runs trained on different data (data fingerprints "
                         f"{', '.join(sorted(seen))}): their difference is the data's as much as the settings'.")


def _example_tests(
    client: MlflowClient, best: Group, other: Group, seeds: list, split: str, resamples: int, seed: int, cache: dict,
    notes: list[str],
) -> None:
    """The paired bootstrap and permutation test over the matched seeds where both groups saved predictions for
    ``split`` (n/a when there are none, or when a pair was made on different examples, e.g. in a sweep over
    datasets). Pairs that each share their rows but differ from one another (folds) are stacked into one."""
    def predictions(run_id: str):
        if run_id not in cache:
            cache[run_id] = load_predictions(client, run_id, split)
        return cache[run_id]

    usable = [s for s in seeds if predictions(best.run_ids[s]) and predictions(other.run_ids[s])]
    if not usable:
        return
    pairs = [(predictions(best.run_ids[s]), predictions(other.run_ids[s])) for s in usable]
    first = pairs[0][0]
    shared = all(np.array_equal(saved.targets, first.targets) and saved.labels == first.labels
                 for pair in pairs for saved in pair)
    mine, theirs = [b.predictions for b, _ in pairs], [o.predictions for _, o in pairs]
    targets = first.targets
    if not shared:
        # cross-validation folds: each matched pair scored its own rows; stacked, the rows are the out-of-fold set
        def same_labels(saved) -> bool:  # folds train on different rows: their label counts differ
            return (saved.labels.task, saved.labels.names) == (first.labels.task, first.labels.names)

        if not all(same_labels(b) and same_labels(o) and np.array_equal(b.targets, o.targets) for b, o in pairs):
            notes.append(f"{best.name} vs {other.name}: the saved predictions_{split}.npz do not share their targets "
                         "and labels: no paired bootstrap or permutation test")
            return
        targets = np.concatenate([b.targets for b, _ in pairs])
        mine, theirs = [np.concatenate(mine)], [np.concatenate(theirs)]
        notes.append(f"{best.name} vs {other.name}: the replicates scored different rows (cross-validation folds); "
                     "the example-level tests stack them")
    other.bootstrap = paired_bootstrap(first.labels, targets, mine, theirs, resamples, seed)
    other.permutation_p = paired_permutation(first.labels, targets, mine, theirs, resamples, seed)
    other.bootstrap_seeds = usable


def compare(
    tracking_uri: str,
    sweep: str | Sequence[str] = "latest",
    metric: str = "test/macro_f1",
    higher_is_better: bool = True,
    resamples: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Rank the groups of ``sweep`` (one sweep, or the jobs of several) by the mean of ``metric`` over seeds and test
    the best against each other group.

    Tests pair runs by seed value and use only the seeds both groups have. The bootstrap and the permutation test use
    the predictions saved for the metric's split (``test/...`` -> ``report/predictions_test.npz``) on every matched
    seed that has them in both groups, averaging the macro-F1 difference over those seeds (:func:`paired_bootstrap`,
    :func:`paired_permutation`); the permutation p-values are Holm-corrected over the groups that have one.
    """
    client = MlflowClient(tracking_uri)
    parents = [find_sweep(client, name) for name in ([sweep] if isinstance(sweep, str) else sweep)]
    ids = [parent.info.run_id for parent in parents]
    if len(set(ids)) < len(ids):
        raise ConfigError(f"sweep={list(sweep)}: a sweep is named twice; name each parent run once.")
    sweeps = [sweep_jobs(client, parent) for parent in parents]
    jobs = [job for jobs in sweeps for job in jobs]
    notes: list[str] = []
    keys = grouping_keys(jobs) if len(sweeps) == 1 else grouping_keys_across(sweeps)
    groups = _groups(jobs, keys, metric, notes)
    if len(sweeps) > 1:
        _check_same_data(groups, {job.run_id: job.data_fingerprint for job in jobs}, notes)
    groups.sort(key=lambda g: g.mean, reverse=higher_is_better)
    best, split = groups[0], metric.split("/", 1)[0] if "/" in metric else None
    cache: dict = {}
    for other in groups[1:]:
        seeds = [s for s in best.values if s in other.values]
        other.pairs = len(seeds)
        mine, theirs = np.array([best.values[s] for s in seeds]), np.array([other.values[s] for s in seeds])
        other.ttest_p, other.wilcoxon_p = paired_tests(mine, theirs)
        other.seeds_needed = seeds_needed(mine - theirs, limit=SEEDS_LIMIT)
        if split:
            _example_tests(client, best, other, seeds, split, resamples, seed, cache, notes)
    for other, adjusted in zip(groups[1:], holm([g.permutation_p for g in groups[1:]])):
        other.holm_p = adjusted
    if any(g.bootstrap for g in groups) and not metric.endswith("/macro_f1_tuned"):
        notes.append(f"the bootstrap and permutation columns test the macro-F1 of each run's saved decisions (at its "
                     f"tuned thresholds where it has them), not {metric}: the two can disagree")
    return Comparison([(parent.info.run_id, parent.info.run_name) for parent in parents], metric, higher_is_better,
                      groups, notes, resamples)


# ---------------------------------------------------------------- output


def _p(value: float | None) -> str:
    return "n/a" if value is None else "<0.001" if value < 0.001 else f"{value:.3f}"


def _cells(group: Group, best: Group) -> list[str]:
    spread = f"{group.mean:.4f} ± {group.std:.4f}" if group.std is not None else f"{group.mean:.4f}"
    other = group is not best
    boot = group.bootstrap
    return [
        group.name,
        str(group.n),
        spread,
        f"{group.min:.4f}",
        f"{group.max:.4f}",
        f"{group.mean - best.mean:+.4f}" if other else "best",
        str(group.pairs) if other else "",
        _p(group.ttest_p) if other else "",
        _p(group.wilcoxon_p) if other else "",
        _seeds(group.seeds_needed) if other else "",
        f"{boot.difference:+.4f} [{boot.low:+.4f}, {boot.high:+.4f}]" if boot else "n/a" if other else "",
        _p(boot.p) if boot else "n/a" if other else "",
        _p(group.permutation_p) if other else "",
        _p(group.holm_p) if other else "",
    ]


def _seeds(needed: int | None) -> str:
    return "n/a" if needed is None else f">{SEEDS_LIMIT}" if needed > SEEDS_LIMIT else str(needed)


def _sweeps(result: Comparison) -> str:
    names = " and ".join(f"{name} ({run_id})" for run_id, name in result.parents)
    return f"sweep{'s' if len(result.parents) > 1 else ''} {names}"


def _title(result: Comparison) -> str:
    direction = "higher" if result.higher_is_better else "lower"
    return f"{result.metric} ({direction} is better) in {_sweeps(result)}"


def _method(result: Comparison) -> list[str]:
    return [
        "mean ± std over seeds, std = sample standard deviation (ddof=1).",
        "Tests: the best group against each other one, over the seeds both have (pairs): scipy's paired t-test "
        "(ttest_rel) and Wilcoxon signed-rank test; n/a with fewer than 2 pairs or no difference.",
        "Seeds needed: the fewest seed pairs with which a two-sided paired t-test at 0.05 detects the observed mean "
        "difference 80% of the time, if the paired differences spread as observed (noncentral t).",
        "Bootstrap: best minus the group (the other sign from Δ vs best, which is the group minus the best), in "
        "macro-F1 of each run's final decisions (report/predictions_<split>.npz: tuned thresholds where "
        "the run tuned them, so it matches */macro_f1_tuned for multi-label runs, whatever metric ranks), averaged "
        f"over the matched seeds with predictions in both; {result.resamples} paired resamples of the examples; "
        "two-sided p = 2 x the fraction of resamples crossing 0.",
        f"Permutation: scipy's paired permutation test of the same difference ({result.resamples} random swaps of the "
        "two groups' decisions per example, exact when there are fewer subsets), two-sided; Holm p: corrected with "
        "Holm's step-down method across the groups compared with the best.",
    ]


def print_table(result: Comparison, console: Console | None = None) -> None:
    table = Table(title=_title(result), caption="mean ± std: sample std (ddof=1) over seeds")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "group" else "right")
    for group in result.groups:
        table.add_row(*_cells(group, result.best))
    console = console or Console()
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}", soft_wrap=True)


def write_files(result: Comparison, directory: Path) -> list[Path]:
    """``compare.md``, ``compare.csv`` and ``compare.png`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    return [_write_markdown(result, directory / "compare.md"), _write_csv(result, directory / "compare.csv"),
            _plot(result, directory / "compare.png")]


def _write_markdown(result: Comparison, path: Path) -> Path:
    lines = [f"# {_title(result)}", "", "| " + " | ".join(COLUMNS) + " |",
             "|---|" + "---:|" * (len(COLUMNS) - 1)]
    lines += ["| " + " | ".join(_cells(group, result.best)) + " |" for group in result.groups]
    lines += ["", *(f"- {line}" for line in _method(result))]
    if result.notes:
        lines += ["", "Notes:", *(f"- {note}" for note in result.notes)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_csv(result: Comparison, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "group", "n", "mean", "std_ddof1", "min", "max", "delta_vs_best", "pairs", "ttest_p",
                         "wilcoxon_p", "seeds_needed", "bootstrap_diff", "bootstrap_low", "bootstrap_high",
                         "bootstrap_p", "permutation_p", "holm_p", "bootstrap_seeds", "values_by_seed", "run_ids"])
        for rank, group in enumerate(result.groups, 1):
            boot = group.bootstrap
            writer.writerow([
                rank, group.name, group.n, group.mean, group.std, group.min, group.max, group.mean - result.best.mean,
                group.pairs, group.ttest_p, group.wilcoxon_p, group.seeds_needed, *(
                    (boot.difference, boot.low, boot.high, boot.p) if boot else (None,) * 4),
                group.permutation_p, group.holm_p,
                " ".join(str(s) for s in group.bootstrap_seeds),
                " ".join(f"{s}:{v}" for s, v in group.values.items()),
                " ".join(group.run_ids.values()),
            ])
    return path


def _plot(result: Comparison, path: Path) -> Path:
    """Horizontal bars (mean ± std, best at the top) with each seed's value as a point."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = result.groups[::-1]
    fig = Figure(figsize=(8, max(2.5, 0.45 * len(groups) + 1.2)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(len(groups))
    ax.barh(y, [g.mean for g in groups], xerr=[g.std or 0.0 for g in groups], color="tab:blue", alpha=0.6,
            capsize=4)
    for row, group in zip(y, groups):
        values = list(group.values.values())
        ax.scatter(values, row + np.linspace(-0.2, 0.2, len(values)), color="black", s=12, zorder=3)
    ax.set_yticks(y, [g.name for g in groups], fontsize=8)
    ax.set_xlabel(f"{result.metric} (mean ± sample std over seeds; points: seeds)")
    ax.set_title(_sweeps(result), fontsize=9, wrap=True)
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, bbox_inches="tight")
    return path


def compare_sweep(cfg: DictConfig) -> Comparison:
    sweep = cfg.sweep if isinstance(cfg.sweep, str) else [str(name) for name in cfg.sweep]
    result = compare(cfg.paths.mlflow_uri, sweep, cfg.metric, cfg.higher_is_better, cfg.bootstrap.resamples,
                     cfg.bootstrap.seed)
    console = Console(width=max(Console().width, 220))  # fourteen columns: never squeeze them into 80 when piped
    print_table(result, console)
    files = write_files(result, Path(cfg.output_dir or cfg.paths.output_dir))
    client = MlflowClient(cfg.paths.mlflow_uri)
    for run_id, _ in result.parents:
        for path in files:
            client.log_artifact(run_id, str(path), "compare")
    console.print(f"wrote {', '.join(p.name for p in files)} to {files[0].parent} and logged them to run"
                  f"{'s' if len(result.parents) > 1 else ''} {', '.join(i for i, _ in result.parents)} under compare/",
                  soft_wrap=True)
    return result


@app("compare")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per predictions file otherwise
    with reported_to_user():
        validate(cfg, "compare")
        compare_sweep(cfg)


if __name__ == "__main__":
    main()
