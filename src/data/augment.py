"""Easy data augmentation (EDA, Wei & Zou 2019) for training rows of minority labels (``augment=eda``).

Each augmented copy applies one operation, picked at random, to the words of a text:

- ``swap``: swap two random words, ``n`` times;
- ``delete``: drop each word with probability ``rate`` (at least one word is kept);
- ``insert``: insert a copy of a random word of the text at a random position, ``n`` times.

with ``n = max(1, round(rate * words))``. EDA's fourth operation, synonym replacement (and its synonym-based
insertion), needs a thesaurus such as WordNet; none ships offline with the project, so insertion repeats a
word of the same text instead. Copies are appended to train only; val and test are never touched. The random
stream of each row depends only on ``seed`` and the row's index, so a run is reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from src.data.records import Split
from src.errors import ConfigError

log = logging.getLogger(__name__)
OPERATIONS = ("swap", "delete", "insert")


def swap(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    words = list(words)
    for _ in range(n):
        i, j = rng.integers(len(words), size=2)
        words[i], words[j] = words[j], words[i]
    return words


def delete(words: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    kept = [word for word in words if rng.random() >= rate]
    return kept or [words[rng.integers(len(words))]]


def insert(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    words = list(words)
    for _ in range(n):
        words.insert(int(rng.integers(len(words) + 1)), words[rng.integers(len(words))])
    return words


class EasyDataAugmentation:
    """``copies`` augmented versions of every training row that carries a minority label: a label held by
    less than ``minority_below`` (a fraction) of the training rows."""

    def __init__(self, rate: float = 0.1, copies: int = 2, minority_below: float = 0.02,
                 operations: Sequence[str] = OPERATIONS, seed: int = 0):
        unknown = set(operations) - set(OPERATIONS)
        if unknown or not operations:
            raise ConfigError(f"augment.operations must be a non-empty subset of {OPERATIONS}, got {list(operations)}")
        if not 0 < rate < 1 or copies < 1 or not 0 < minority_below <= 1:
            raise ConfigError("augment needs 0 < rate < 1, copies >= 1 and 0 < minority_below <= 1; "
                              f"got rate={rate}, copies={copies}, minority_below={minority_below}")
        self.rate, self.copies, self.minority_below = rate, copies, minority_below
        self.operations, self.seed = tuple(operations), seed

    def minority_labels(self, split: Split, num_labels: int) -> np.ndarray:
        return np.flatnonzero(split.label_counts(num_labels) < self.minority_below * len(split))

    def augment_text(self, text: str, rng: np.random.Generator) -> str:
        words = text.split()
        if len(words) < 2:
            return text
        operation = self.operations[rng.integers(len(self.operations))]
        n = max(1, round(self.rate * len(words)))
        if operation == "swap":
            return " ".join(swap(words, n, rng))
        if operation == "delete":
            return " ".join(delete(words, self.rate, rng))
        return " ".join(insert(words, n, rng))

    def __call__(self, split: Split, num_labels: int) -> Split:
        """``split`` followed by the augmented copies of its minority-label rows."""
        minority = set(self.minority_labels(split, num_labels).tolist())
        rows = [i for i, ids in enumerate(split.labels) if minority.intersection(ids)]
        texts, labels, origin = [], [], []
        for row in rows:
            rng = np.random.default_rng([self.seed, row])
            for copy in range(1, self.copies + 1):
                texts.append(self.augment_text(split.texts[row], rng))
                labels.append(list(split.labels[row]))
                origin.append(f"{split.origin[row] if split.origin else f'row {row}'} (eda copy {copy})")
        log.info(f"augment: EDA copies of {len(rows):,} train rows with one of {len(minority)} minority labels: "
                 f"{len(split):,} -> {len(split) + len(texts):,} rows")
        return Split(split.texts + texts, split.labels + labels, (split.origin + origin) if split.origin else [])
