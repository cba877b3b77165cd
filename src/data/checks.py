"""The data checks: what was read and how the task was decided, rows per label and split, overlap between splits,
texts cut at ``max_length``; warnings for what trains badly, refusals for what cannot train.

One :class:`DataChecks` object, built by the DataModule, goes to the log, to ``summary.json`` (``data_checks``) and to
MLflow (a few metrics and params, and ``data_checks.json``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from src.data.records import SPLITS, LabelledData, Split
from src.errors import ConfigError, DataError

log = logging.getLogger(__name__)

LEAKAGE_POLICIES = ("warn", "error", "drop_from_train")
TRUNCATION_WARN_SHARE = 0.10  # warn when a split has more of its texts cut than this
NAMED = 5  # rows or labels a message names before "and N more"


def check_leakage_policy(policy: str) -> str:
    if policy not in LEAKAGE_POLICIES:
        raise ConfigError(f"data.on_leakage={policy}: use one of {', '.join(LEAKAGE_POLICIES)}.")
    return policy


def normalised(text: str) -> str:
    """A text compared loosely: whitespace runs collapsed, case folded."""
    return " ".join(text.split()).casefold()


def _names(items: list[str]) -> str:
    return ", ".join(items[:NAMED]) + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")


def refuse_untrainable(data: LabelledData) -> None:
    """A DataError for a train split a classifier cannot learn from: one class (multi-class), or no label that is
    on some train rows and off others (multi-label)."""
    counts = data.label_counts("train")
    rows = len(data.splits["train"])
    present = [name for name, n in zip(data.label_names, counts) if n]
    if data.task == "multiclass" and len(present) < 2:
        only = f"only the class {present[0]!r}" if present else "no class"
        raise DataError(f"the train split has {only} ({rows} rows): a classifier needs at least two classes. "
                        "Add rows of other classes, or check data.source.label_column.")
    if data.task == "multilabel" and not any(0 < n < rows for n in counts):
        raise DataError(f"no label varies in the train split ({rows} rows; label rows: "
                        f"{dict(zip(data.label_names, map(int, counts)))}): each label is on every row or on "
                        "none, so there is nothing to learn. Add rows with and without each label.")


def overlap(earlier: Split, later: Split) -> dict[str, Any]:
    """Rows of ``later`` whose text is in ``earlier``: exactly, and after :func:`normalised` (which includes the
    exact ones), with the first few rows named."""
    exact = set(earlier.texts)
    loose = {normalised(text) for text in earlier.texts}
    exact_rows = [i for i, text in enumerate(later.texts) if text in exact]
    loose_rows = [i for i, text in enumerate(later.texts) if normalised(text) in loose]
    origin = later.origin or [f"record {i}" for i in range(len(later))]
    return {"exact": len(exact_rows), "normalised": len(loose_rows), "rows": [origin[i] for i in loose_rows[:NAMED]]}


def drop_leaked_train_rows(data: LabelledData) -> tuple[LabelledData, str | None]:
    """``data.on_leakage=drop_from_train``: train rows whose text (:func:`normalised`) is also in val or test are
    removed, so held-out scores measure unseen texts; returns the data and the message naming what went."""
    held_out = {normalised(text) for name in ("val", "test") if name in data.splits
                for text in data.splits[name].texts}
    train = data.splits["train"]
    keep = [i for i, text in enumerate(train.texts) if normalised(text) not in held_out]
    if len(keep) == len(train):
        return data, None
    dropped = sorted(set(range(len(train))) - set(keep))
    origin = train.origin or [f"record {i}" for i in range(len(train))]
    message = (f"data.on_leakage=drop_from_train: dropped {len(dropped)} of {len(train)} train rows whose text is "
               f"also in val or test: {_names([origin[i] for i in dropped])}")
    return data.with_splits({**data.splits, "train": train.subset(keep)}), message


def truncation(lengths: np.ndarray, covered: np.ndarray | int, limit: str) -> dict[str, Any]:
    """How many texts are longer (special tokens included) than the tokens of them the model reads (``covered``:
    ``max_length``, or per text what a hierarchical model's windows cover) and by how much; ``limit`` names the
    setting that cuts."""
    lengths = np.asarray(lengths, dtype=np.int64)
    over = lengths - np.asarray(covered, dtype=np.int64)
    over = over[over > 0]
    return {"limit": limit, "texts": int(lengths.size), "truncated": int(over.size),
            "share": float(over.size / lengths.size) if lengths.size else 0.0,
            "overflow_median": float(np.median(over)) if over.size else 0.0,
            "overflow_max": int(over.max()) if over.size else 0,
            "longest": int(lengths.max()) if lengths.size else 0}


@dataclass
class DataChecks:
    """The facts about one dataset as the run uses it (after any carved validation split)."""

    task: str
    task_reason: str
    encoding: dict[str, Any]  # {"requested": "auto", "files": {split: {"path", "encoding"}}}
    rows: dict[str, int]  # per split
    unlabelled: dict[str, int]  # rows without any label, per split
    labels: list[dict[str, Any]]  # {"label": name, "train": rows, "val": rows, "test": rows}
    overlap: dict[str, dict[str, Any]]  # "train-test": {"exact", "normalised", "rows"}
    max_length: int
    truncation: dict[str, dict[str, Any]] = field(default_factory=dict)  # per split, once tokenised
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, data: LabelledData, encoding: str, max_length: int, on_leakage: str = "warn",
              training: bool = True) -> DataChecks:
        """Counts, overlap and warnings of ``data`` (each warning logged once, here); a DataError for overlap
        between splits under ``on_leakage="error"``. Warnings about labels are for ``training`` only: evaluating a
        trained model on a file with few of its labels is normal."""
        names = [name for name in SPLITS if name in data.splits]
        counts = {name: data.label_counts(name) for name in names}
        checks = cls(
            task=data.task,
            task_reason=data.facts.get("task_reason", "given by the data source"),
            encoding={"requested": encoding, "files": dict(data.facts.get("encodings", {}))},
            rows={name: len(data.splits[name]) for name in names},
            unlabelled={name: sum(not ids for ids in data.splits[name].labels) for name in names},
            labels=[{"label": label, **{name: int(counts[name][i]) for name in names}}
                    for i, label in enumerate(data.label_names)],
            overlap={f"{a}-{b}": overlap(data.splits[a], data.splits[b])
                     for i, a in enumerate(names) for b in names[i + 1:]},
            max_length=max_length,
        )
        leaks = checks.leakage_messages()
        if leaks and on_leakage == "error":
            raise DataError("rows repeat across splits, so the held-out scores would overstate the model:\n  "
                            + "\n  ".join(leaks) + "\nRemove the duplicates, or set data.on_leakage=warn.")
        labels = checks.label_messages(data) if training else []
        for message in [*data.facts.get("warnings", []), *labels, *leaks]:
            checks.warn(message)
        return checks

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)

    def label_messages(self, data: LabelledData) -> list[str]:
        messages = []
        empty = [row["label"] for row in self.labels if not row["train"]]
        if empty:
            messages.append(f"{len(empty)} label(s) have no train rows, so the model cannot learn them (and they "
                            f"lower macro averages): {_names(empty)}")
        if data.task == "multilabel":
            always = [row["label"] for row in self.labels if row["train"] == self.rows["train"]]
            if always:
                messages.append(f"label(s) on every train row, so they teach nothing: {_names(always)}")
        for split in ("val", "test"):
            if split not in self.rows:
                continue
            missing = [row["label"] for row in self.labels if row["train"] and not row[split]]
            if missing:
                messages.append(f"{len(missing)} label(s) have train rows but none in {split}, so {split} cannot "
                                f"measure them: {_names(missing)}")
            present = [row["label"] for row in self.labels if row[split]]
            if data.task == "multiclass" and len(present) == 1:
                messages.append(f"{split} has rows of a single class ({present[0]!r}): its scores say little")
        return messages

    def leakage_messages(self) -> list[str]:
        messages = []
        for pair, found in self.overlap.items():
            if found["normalised"]:
                earlier, later = pair.split("-")
                loose = found["normalised"] - found["exact"]
                messages.append(
                    f"{found['normalised']} of {self.rows[later]} {later} rows repeat a {earlier} text "
                    f"({found['exact']} exactly, {loose} up to case and whitespace): {_names(found['rows'])}")
        return messages

    def add_truncation(self, split: str, lengths: np.ndarray, covered: np.ndarray | None = None,
                       max_chunks: int = 1) -> None:
        """Record how ``split``'s texts fare at ``max_length`` (a hierarchical model: what its ``max_chunks``
        windows cover, ``covered`` per text); a warning when a large share is cut."""
        if max_chunks > 1:
            limit, fix = (f"model.max_chunks={max_chunks} windows of {self.max_length} tokens",
                          "Raise model.max_chunks (or data.max_length), or accept the cut.")
        else:
            limit, fix = (f"data.max_length={self.max_length}",
                          "Raise data.max_length if the encoder allows, use model=hierarchical for long documents, "
                          "or accept the cut.")
        found = self.truncation[split] = truncation(lengths, self.max_length if covered is None else covered, limit)
        if found["share"] > TRUNCATION_WARN_SHARE:
            self.warn(f"{limit} cuts {found['truncated']:,} of {found['texts']:,} {split} "
                      f"texts ({found['share']:.0%}; median {found['overflow_median']:g} tokens over, max "
                      f"{found['overflow_max']:,}): the model never sees their ends. {fix}")

    # ---------------------------------------------------------------- reporting

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        """The checks for the log, a few lines plus one per label."""
        files = ", ".join(f"{split} {file['encoding']}" for split, file in self.encoding["files"].items()) or "-"
        splits = list(self.rows)
        lines = [f"data checks: {self.task} ({self.task_reason})",
                 f"  encoding ({self.encoding['requested']}): {files}",
                 "  rows: " + ", ".join(f"{s} {self.rows[s]:,} ({self.unlabelled[s]:,} without a label)"
                                        for s in splits)]
        width = max([len("label"), *(len(row["label"]) for row in self.labels)])
        lines.append("  " + "label".ljust(width) + "".join(f"{s:>9}" for s in splits))
        lines += ["  " + row["label"].ljust(width) + "".join(f"{row[s]:>9,}" for s in splits) for row in self.labels]
        for pair, found in self.overlap.items():
            lines.append(f"  overlap {pair}: {found['exact']:,} exact, {found['normalised']:,} normalised")
        for split, found in self.truncation.items():
            lines.append(f"  truncated by {found['limit']}, {split}: {found['truncated']:,} of "
                         f"{found['texts']:,} ({found['share']:.1%}; overflow median {found['overflow_median']:g}, "
                         f"max {found['overflow_max']:,})")
        return lines

    def metrics(self) -> dict[str, float]:
        """The numbers worth a chart or a filter in MLflow."""
        out: dict[str, float] = {f"data/{split}_rows": rows for split, rows in self.rows.items()}
        out.update({f"data/overlap_{pair.replace('-', '_')}": found["normalised"]
                    for pair, found in self.overlap.items()})
        out.update({f"data/{split}_truncated_share": found["share"] for split, found in self.truncation.items()})
        out["data/labels_without_train_rows"] = sum(not row["train"] for row in self.labels)
        out["data/warnings"] = len(self.warnings)
        return {key: float(value) for key, value in out.items()}

    def log_to_mlflow(self, client: Any, run_id: str) -> None:
        """``data_checks.json`` and :meth:`metrics` on run ``run_id``; the decided task and encodings as params."""
        client.log_dict(run_id, self.to_dict(), "data_checks.json")
        for key, value in self.metrics().items():
            client.log_metric(run_id, key, value)
        encodings = sorted({file["encoding"] for file in self.encoding["files"].values()}) or ["-"]
        client.log_param(run_id, "data_checks.task", self.task)
        client.log_param(run_id, "data_checks.encoding", ",".join(encodings))
