"""The tiny emotion dataset shipped in ``src/data/sample/``, for smoke runs without any download."""

from __future__ import annotations

from pathlib import Path

from src.data.records import LabelledData
from src.data.sources.tabular import TabularSource

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample"
SAMPLE_LABELS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]


class SampleSource:
    def load(self) -> LabelledData:
        return TabularSource(
            train=str(SAMPLE_DIR / "train.jsonl"),
            val=str(SAMPLE_DIR / "val.jsonl"),
            test=str(SAMPLE_DIR / "test.jsonl"),
            task="multilabel",
            labels=SAMPLE_LABELS,
        ).load()
