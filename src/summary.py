"""The end-of-run result: ``summary.json`` for machines and a table for people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from src.io import write_json
from src.metrics.thresholds import CROSSFIT_REPEATS

SPLITS = ("train", "val", "test")
COLUMNS = ("loss", "macro_f1", "micro_f1", "macro_f1_tuned")


def metrics_by_split(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{"val/macro_f1": 0.5, "train/loss_epoch": 0.3}`` -> ``{"val": {"macro_f1": 0.5}, "train": {"loss": 0.3}}``."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        split, _, name = key.partition("/")
        if split in SPLITS and name:
            out.setdefault(split, {})[name.removesuffix("_epoch")] = float(value)
    return out


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    write_json(path, summary)


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(
        title=f"labelwise: {summary['run_name']}  ({summary['task']}, {len(summary['label_names'])} labels)"
    )
    table.add_column("split")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for split in SPLITS:
        row = summary["metrics"].get(split)
        if row:
            table.add_row(split, *(f"{row[c]:.4f}" if c in row else "-" for c in COLUMNS))
    console.print(table)
    warnings = summary.get("data_checks", {}).get("warnings", [])
    for warning in warnings[:3]:  # said at load time too, but long logs scroll it away
        console.print(f"data warning: {warning}", soft_wrap=True, markup=False)
    if len(warnings) > 3:
        console.print(f"... and {len(warnings) - 3} more data warnings: summary.json, data_checks.warnings")
    val, test = summary["metrics"].get("val", {}), summary["metrics"].get("test", {})
    if "macro_f1_tuned_crossfit" in val:
        console.print(f"val macro-F1, thresholds tuned on one half and scored on the other (mean of "
                      f"{CROSSFIT_REPEATS} halvings): "
                      f"{val['macro_f1_tuned_crossfit']:.4f}")
    if "macro_f1_ci95" in test:
        low, high = test["macro_f1_ci95"]
        rule = "tuned thresholds" if summary.get("thresholds") else "0.5"
        console.print(f"test macro-F1 95% bootstrap interval ({rule}): {low:.4f} - {high:.4f}")
    sizes = summary.get("checkpoint_mb", {})
    for kind in ("best", "last"):
        path = summary.get(f"{kind}_checkpoint")
        if path:
            size = sizes.get(Path(path).name)
            console.print(f"{kind} checkpoint: {' ' if kind == 'last' else ''}{path}"
                          + (f"  ({size:,.1f} MB)" if size is not None else ""), soft_wrap=True)
    if summary["mlflow"]["run_id"]:
        console.print(
            f"MLflow run:      {summary['mlflow']['run_id']}  ({summary['mlflow']['tracking_uri']})", soft_wrap=True
        )
    console.print(f"summary:         {summary['output_dir']}/summary.json", soft_wrap=True)
