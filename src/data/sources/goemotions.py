"""GoEmotions (Demszky et al., 2020): 58k Reddit comments, 27 emotions + neutral, multi-label.

Read from a local directory of the original TSV files, or fetched from the Hugging Face hub. The paper's
Ekman (6 + neutral) and sentiment (3 + neutral) taxonomies are available by regrouping the 28 labels.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from src.data.records import LabelledData, Split
from src.data.sources.rows import RowProblems
from src.errors import DataError

logger = logging.getLogger(__name__)

LABELS: tuple[str, ...] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
    "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
    "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip
NEUTRAL = "neutral"

# Group -> original labels, as in the paper's ekman_mapping.json and sentiment_mapping.json.
EKMAN: dict[str, list[str]] = {
    "anger": ["anger", "annoyance", "disapproval"],
    "disgust": ["disgust"],
    "fear": ["fear", "nervousness"],
    "joy": [
        "joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief", "pride",
        "admiration", "desire", "caring",
    ],
    "sadness": ["sadness", "disappointment", "embarrassment", "grief", "remorse"],
    "surprise": ["surprise", "realization", "confusion", "curiosity"],
}  # fmt: skip
SENTIMENT: dict[str, list[str]] = {
    "positive": [
        "admiration", "amusement", "approval", "caring", "desire", "excitement", "gratitude", "joy", "love",
        "optimism", "pride", "relief",
    ],
    "negative": [
        "anger", "annoyance", "disappointment", "disapproval", "disgust", "embarrassment", "fear", "grief",
        "nervousness", "remorse", "sadness",
    ],
    "ambiguous": ["confusion", "curiosity", "realization", "surprise"],
}  # fmt: skip
TAXONOMIES: dict[str, dict[str, list[str]] | None] = {
    "original": None,
    "ekman": EKMAN,
    "sentiment": SENTIMENT,
}

# Local file -> split; only train.tsv is required.
_FILES = {"train.tsv": "train", "dev.tsv": "val", "test.tsv": "test"}
_HUB_SPLITS = {"train": "train", "validation": "val", "test": "test"}
_LOCAL_FIX = "pass data.source.data_dir=<directory with train.tsv and dev.tsv>"


class GoEmotionsSource:
    """GoEmotions as multi-label data in the ``original``, ``ekman`` or ``sentiment`` taxonomy."""

    def __init__(
        self,
        data_dir: str | None = None,
        taxonomy: str = "original",
        hub_id: str = "google-research-datasets/go_emotions",
        hub_config: str = "simplified",
    ) -> None:
        if taxonomy not in TAXONOMIES:
            raise DataError(
                f"unknown GoEmotions taxonomy {taxonomy!r}; valid ones: {', '.join(TAXONOMIES)}. "
                "Set data.source.taxonomy to one of them."
            )
        self.data_dir = data_dir
        self.taxonomy = taxonomy
        self.hub_id = hub_id
        self.hub_config = hub_config

    def load(self) -> LabelledData:
        splits = self._read_local(Path(self.data_dir)) if self.data_dir else self._fetch()
        mapping = TAXONOMIES[self.taxonomy]
        if mapping is None:
            return LabelledData(splits, list(LABELS), "multilabel")
        return regroup(splits, mapping)

    def _read_local(self, directory: Path) -> dict[str, Split]:
        if not (directory / "train.tsv").is_file():
            what = "no train.tsv in" if directory.is_dir() else "no such directory:"
            raise DataError(f"GoEmotions: {what} {directory}. To read a local copy, {_LOCAL_FIX}.")
        _check_label_file(directory / "labels.txt")
        splits = {}
        for name, split in _FILES.items():
            if (directory / name).is_file():
                splits[split] = _read_tsv(directory / name)
            else:
                logger.warning("GoEmotions: no %s in %s; the %s split is skipped", name, directory, split)
        return splits

    def _fetch(self) -> dict[str, Split]:
        try:
            import datasets
        except ImportError:
            raise DataError(
                "GoEmotions: no data directory given, and the `datasets` package that fetches it from the "
                f"Hugging Face hub is not installed. Either {_LOCAL_FIX}, or `pip install datasets` "
                "to enable fetching."
            ) from None
        try:
            hub = datasets.load_dataset(self.hub_id, self.hub_config)
        # Any failure (offline, HF_HUB_OFFLINE=1, unknown id) has the same fix: read a local copy.
        except Exception as exc:
            raise DataError(
                f"GoEmotions: could not fetch {self.hub_id} ({self.hub_config}) from the Hugging Face hub: "
                f"{type(exc).__name__}: {exc}. Without network access, {_LOCAL_FIX}."
            ) from exc
        splits = {}
        for hub_split, split in _HUB_SPLITS.items():
            if hub_split in hub:
                texts = list(hub[hub_split]["text"])
                labels = [sorted(set(ids)) for ids in hub[hub_split]["labels"]]
                origin = [f"{self.hub_id}/{hub_split}:{row}" for row in range(len(texts))]
                splits[split] = Split(texts, labels, origin)
        return splits


def regroup(splits: dict[str, Split], mapping: dict[str, list[str]]) -> LabelledData:
    """Map original label ids to ``mapping``'s groups (+ neutral, last); a record gets its labels' groups."""
    groups = [*mapping, NEUTRAL]
    group_of = {LABELS.index(label): g for g, members in enumerate(mapping.values()) for label in members}
    group_of[LABELS.index(NEUTRAL)] = len(groups) - 1
    regrouped = {
        name: Split(split.texts, [sorted({group_of[i] for i in ids}) for ids in split.labels], split.origin)
        for name, split in splits.items()
    }
    return LabelledData(regrouped, groups, "multilabel")


def _check_label_file(path: Path) -> None:
    if not path.is_file():
        return
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if names != list(LABELS):
        raise DataError(
            f"{path}: the label names differ from the 28 GoEmotions labels {list(LABELS)}, so the ids in "
            f"the TSV files cannot be trusted; found {names}. Point data.source.data_dir at the original GoEmotions "
            "files, or read other data with the tabular source."
        )


def _read_tsv(path: Path) -> Split:
    """Rows ``text<TAB>comma-separated label ids<TAB>comment id``, no header, no quoting."""
    problems = RowProblems(path)
    texts: list[str] = []
    labels: list[list[int]] = []
    origin: list[str] = []
    with path.open(encoding="utf-8", newline="") as lines:
        reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            line = reader.line_num
            if len(row) != 3:
                problems.add(
                    line, f"expected 3 tab-separated fields (text, label ids, comment id), got {len(row)}"
                )
                continue
            text, id_cell, _ = row
            ids = [piece.strip() for piece in id_cell.split(",")]
            bad = [i for i in ids if not (i.isascii() and i.isdigit() and int(i) < len(LABELS))]
            if bad:
                problems.add(line, f"label ids {bad} are not integers in 0..{len(LABELS) - 1}")
            elif not text.strip():
                problems.add(line, "empty text")
            else:
                texts.append(text)
                labels.append(sorted({int(i) for i in ids}))
                origin.append(f"{path}:{line}")
    problems.raise_if_any("Fix or remove these rows; GoEmotions files come from the paper's data/ folder.")
    return Split(texts, labels, origin)
