"""The Python API (src.api) and docs/quickstart.py, run as a user would: offline, on the bundled sample data."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def test_quickstart_trains_loads_and_labels_offline(tiny_bert, tmp_path):
    """The script runs (on the tiny encoder for speed); what it printed equals src.api.predict on its checkpoint and
    on a Hugging Face export of it."""
    from src.api import load, predict
    from src.export import write_export

    result = subprocess.run([sys.executable, str(ROOT / "docs" / "quickstart.py"), f"model.name_or_path={tiny_bert}",
                             "logger=none"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_file,) = (tmp_path / "outputs").glob("*/*/summary.json")  # the CLI's outputs/<date>/<time>
    checkpoint = json.loads(summary_file.read_text())["best_checkpoint"]
    lines = result.stdout.splitlines()
    model = load(checkpoint)
    assert f"labels: {', '.join(model.labels.names)}" in lines

    texts = ["I can't stop smiling, best day in years!", "They lied to us again. Unbelievable."]
    printed = [line for line in lines if line.endswith(tuple(texts))]
    assert printed == [f"{record['labels']} {record['text']}" for record in predict(texts, checkpoint)]
    last = "The noise downstairs at 3 a.m. made my heart race."
    assert ast.literal_eval(lines[-1]) == {label: round(score, 3) for label, score in
                                           predict([last], model)[0]["scores"].items()}

    write_export(model, Path(checkpoint), tmp_path / "hf", "hf", str(tmp_path / "hf"))
    for ours, exported in zip(predict(texts + [last], model), predict(texts + [last], tmp_path / "hf")):
        assert exported["labels"] == ours["labels"]
        assert exported["scores"] == pytest.approx(ours["scores"], abs=1e-5)
