"""Every imbalance loss on GoEmotions at an equal budget: bundled MiniLM, same data, seed and epochs.

    python benchmarks/losses.py [--data-dir ../shared/data/goemotions] [--epochs 1] [--losses bce asymmetric]

Each loss is one `python -m src.train experiment=goemotions_baseline loss=...` subprocess (the framework's own
path, logged to MLflow experiment `loss_benchmark` in outputs/mlflow.db). Prints a table of val macro-F1 at 0.5,
with per-label thresholds tuned on val, cross-fitted (tuned on one half of val, scored on the other), micro-F1 and
wall time, and writes it as markdown next to the runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "goemotions"
LOSSES = {
    "bce": ["loss=bce"],
    "bce+pos_weight": ["loss=bce", "loss.pos_weight=auto"],
    "asymmetric": ["loss=asymmetric"],
    "focal": ["loss=focal"],
    "combined": ["loss=combined"],
    "class_balanced": ["loss=class_balanced"],
}
COLUMNS = {
    "macro_f1": "macro-F1 @0.5",
    "macro_f1_tuned": "macro-F1 tuned",
    "macro_f1_tuned_crossfit": "macro-F1 cross-fitted",
    "micro_f1": "micro-F1 @0.5",
    "micro_f1_tuned": "micro-F1 tuned",
}


def run_one(name: str, overrides: list[str], args: argparse.Namespace) -> dict:
    run_dir = args.output / name
    command = [
        sys.executable, "-m", "src.train", "experiment=goemotions_baseline", f"data.source.data_dir={args.data_dir}",
        f"trainer.max_epochs={args.epochs}", f"seed={args.seed}", "task_name=loss_benchmark",
        f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false", *overrides, *args.override,
    ]
    print(f"[{name}] {' '.join(command[2:])}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    val = json.loads((run_dir / "summary.json").read_text())["metrics"]["val"]
    return {**{key: val.get(key) for key in COLUMNS}, "minutes": (time.perf_counter() - started) / 60}


def markdown(results: dict[str, dict], args: argparse.Namespace) -> str:
    header = ["loss", *COLUMNS.values(), "wall min"]
    lines = [f"GoEmotions val (dev), bundled MiniLM, {args.epochs} epoch(s), seed {args.seed}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in results.items():
        cells = [f"{row[key]:.4f}" if row[key] is not None else "-" for key in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['minutes']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "benchmarks" / "losses")
    parser.add_argument("--override", action="append", default=[], help="extra src.train override (repeatable)")
    args = parser.parse_args()
    if not (args.data_dir / "train.tsv").is_file():
        print(f"SKIP: GoEmotions not found at {args.data_dir} (needs train.tsv and dev.tsv); pass --data-dir.")
        return
    args.data_dir = args.data_dir.resolve()
    results = {name: run_one(name, LOSSES[name], args) for name in args.losses}

    table = Table(title=f"GoEmotions val, MiniLM, {args.epochs} epoch(s), seed {args.seed}")
    for column in ("loss", *COLUMNS.values(), "wall min"):
        table.add_column(column, justify="left" if column == "loss" else "right")
    for name, row in results.items():
        table.add_row(name, *(f"{row[key]:.4f}" if row[key] is not None else "-" for key in COLUMNS),
                      f"{row['minutes']:.1f}")
    Console().print(table)
    (args.output / "losses.md").write_text(markdown(results, args))
    print(f"table: {args.output / 'losses.md'}")


if __name__ == "__main__":
    main()
