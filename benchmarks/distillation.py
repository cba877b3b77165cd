"""Distillation on the bundled sample data: the default fine-tuned MiniLM as the teacher, a linear probe (frozen
MiniLM, only the head trains) as the student, with and without the teacher.

    python benchmarks/distillation.py [--alpha 0.7] [--temperature 2] [--seed 42]

Three runs through the framework's own path (MLflow experiment `distill_benchmark` in outputs/mlflow.db): the
teacher (`python -m src.train`, the README's default run), the probe alone (`experiment=linear_probe`) and the probe
with `distill.teacher=<the teacher's best checkpoint>`. Prints val/test macro-F1 (tuned thresholds) of each, the
wall time, and the last line `distilled student - student alone: test macro-F1 +X.XXXX`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, *overrides: str) -> tuple[dict, float]:
    directory = ROOT / "outputs" / "benchmarks" / "distillation" / name
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "src.train", "task_name=distill_benchmark", f"hydra.run.dir={directory}",
                    "trainer.enable_progress_bar=false", *overrides], cwd=ROOT, check=True)
    return json.loads((directory / "summary.json").read_text()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    seed = f"seed={args.seed}"
    teacher, teacher_time = run("teacher", seed)
    alone, alone_time = run("student", "experiment=linear_probe", seed)
    distilled, distilled_time = run("distilled", "experiment=linear_probe", seed,
                                    f"distill.teacher={teacher['best_checkpoint']}", f"distill.alpha={args.alpha}",
                                    f"distill.temperature={args.temperature}")

    def f1(summary: dict, split: str) -> float:
        row = summary["metrics"][split]
        return row.get("macro_f1_tuned", row["macro_f1"])

    print(f"\n{'model':<34} {'val macro-F1':>12} {'test macro-F1':>13} {'wall s':>7}")
    for name, summary, seconds in (("teacher: fine-tuned MiniLM", teacher, teacher_time),
                                   ("student: linear probe alone", alone, alone_time),
                                   (f"student distilled (a={args.alpha}, T={args.temperature:g})", distilled,
                                    distilled_time)):
        print(f"{name:<34} {f1(summary, 'val'):>12.4f} {f1(summary, 'test'):>13.4f} {seconds:>7.0f}")
    print(f"distilled student - student alone: test macro-F1 {f1(distilled, 'test') - f1(alone, 'test'):+.4f}")


if __name__ == "__main__":
    main()
