"""Labelled texts from CSV, TSV or JSONL files, one file per split, labels given as names or integer ids."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from src.data.records import TASKS, LabelledData, Split, Task
from src.data.sources.rows import RowProblems, require_file
from src.errors import DataError

FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}


@dataclass
class _Record:
    text: str
    tokens: list[str]  # label names or integer ids, as written
    listed: bool  # the labels were written as a list, which marks the data multi-label
    line: int


def _is_id(token: str) -> bool:
    return token.isascii() and token.isdigit()


def _token(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"label {value!r} is neither a name nor an integer id")
    token = str(value).strip()
    if not token:
        raise ValueError("empty label name")
    return token


def _tokens(value: object, delimiter: str | None) -> tuple[list[str], bool]:
    """Label tokens of one record and whether they were a list; TypeError/ValueError say what is wrong."""
    if isinstance(value, list):
        return [_token(item) for item in value], True
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"labels {value!r} start with '[' but are not a JSON list") from None
        return _tokens(parsed, delimiter)
    if isinstance(value, str):
        pieces = value.split(delimiter) if delimiter is not None else [value]
        return [piece.strip() for piece in pieces if piece.strip()], False
    return [_token(value)], False


class TabularSource:
    """Reads ``train`` (required), ``val`` and ``test`` files into :class:`LabelledData`.

    Without ``labels`` the vocabulary comes from the train file: integer tokens are ids (names
    ``"0".."max"``), otherwise the sorted unique names. ``task="auto"`` picks multilabel when a train
    record has other than one label or any record's labels are written as a list.
    """

    def __init__(
        self,
        train: str,
        val: str | None = None,
        test: str | None = None,
        *,
        format: str = "auto",
        text_column: str = "text",
        label_column: str = "labels",
        label_delimiter: str | None = ",",
        labels: list[str] | None = None,
        task: str = "auto",
    ) -> None:
        if format not in ("auto", *FORMATS):
            raise DataError(f"data.source.format must be one of auto, {', '.join(FORMATS)}; got {format!r}")
        if task not in ("auto", *TASKS):
            raise DataError(f"data.source.task must be one of auto, {', '.join(TASKS)}; got {task!r}")
        self.files = {split: path for split, path in (("train", train), ("val", val), ("test", test)) if path}
        self.format = format
        self.text_column = text_column
        self.label_column = label_column
        self.label_delimiter = label_delimiter
        self.labels = [str(name) for name in labels] if labels is not None else None
        self.task = task

    def load(self) -> LabelledData:
        records = {
            split: self._read(Path(path), f"data.source.{split}") for split, path in self.files.items()
        }
        names, ids_allowed = self._vocabulary(records["train"])
        splits = {
            split: self._encode(self.files[split], rows, names, ids_allowed)
            for split, rows in records.items()
        }
        return LabelledData(splits, names, self._task(records["train"], splits["train"]))

    def _vocabulary(self, train: list[_Record]) -> tuple[list[str], bool]:
        """Label names, and whether integer tokens are ids into them."""
        if self.labels is not None:
            return self.labels, True
        tokens = {token for record in train for token in record.tokens}
        if not tokens:
            raise DataError(
                f"{self.files['train']}: no record has a label, so the label vocabulary is unknown. "
                "Pass data.source.labels=[...] with the label names."
            )
        if all(_is_id(token) for token in tokens):
            return [str(i) for i in range(max(int(token) for token in tokens) + 1)], True
        return sorted(tokens), False

    def _encode(self, path: str, records: list[_Record], names: list[str], ids_allowed: bool) -> Split:
        index = {name: i for i, name in enumerate(names)}
        problems = RowProblems(path)
        labels = []
        for record in records:
            ids = set()
            for token in record.tokens:
                i = index.get(token)
                if i is None and ids_allowed and _is_id(token) and int(token) < len(names):
                    i = int(token)
                if i is None:
                    problems.add(record.line, f"unknown label {token!r}")
                else:
                    ids.add(i)
            labels.append(sorted(ids))
        problems.raise_if_any(
            f"Known labels: {names}. If the data is right, pass data.source.labels=[...] "
            "listing every label name (integer labels are then ids into that list)."
        )
        return Split([r.text for r in records], labels, [f"{path}:{r.line}" for r in records])

    def _task(self, records: list[_Record], train: Split) -> Task:
        if self.task != "auto":
            return self.task  # type: ignore[return-value]  # checked in __init__
        multi = any(r.listed for r in records) or any(len(ids) != 1 for ids in train.labels)
        return "multilabel" if multi else "multiclass"

    def _read(self, path: Path, key: str) -> list[_Record]:
        require_file(path, key)
        fmt = self.format if self.format != "auto" else _EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"{path}: cannot tell the format from the extension {path.suffix!r}. "
                f"Set data.source.format to one of {', '.join(FORMATS)}."
            )
        problems = RowProblems(path)
        records = []
        try:
            with path.open(encoding="utf-8-sig", newline="") as lines:
                if fmt == "jsonl":
                    rows = self._jsonl_rows(lines, problems)
                else:
                    rows = self._delimited_rows(lines, path, fmt, problems)
                for line, text, value in rows:
                    if not isinstance(text, str):
                        problems.add(line, f"text is {type(text).__name__}, not a string")
                    elif not text.strip():
                        problems.add(line, "empty text: give the row a text or remove it")
                    else:
                        try:
                            records.append(_Record(text, *_tokens(value, self.label_delimiter), line))
                        except (TypeError, ValueError) as exc:
                            problems.add(line, str(exc))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}). Save it as UTF-8."
            ) from None
        problems.raise_if_any("Fix or remove these rows.")
        if not records:
            raise DataError(f"{path}: no records. Put at least one row in the file {key} points to.")
        return records

    def _delimited_rows(
        self, lines: Iterable[str], path: Path, fmt: str, problems: RowProblems
    ) -> Iterator[tuple[int, object, object]]:
        delimiter = _DELIMITERS[fmt]
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader, [])
        missing = [c for c in (self.text_column, self.label_column) if c not in header]
        if missing:
            raise DataError(
                f"{path}: no column {', '.join(map(repr, missing))} in the header row "
                f"(columns found: {header}). "
                "Set data.source.text_column / data.source.label_column to the right names, "
                f"or data.source.format if this is not a {fmt.upper()} file with a header row."
            )
        text_at, label_at = header.index(self.text_column), header.index(self.label_column)
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) != len(header):
                problems.add(
                    reader.line_num,
                    f"expected {len(header)} fields like the header, got {len(row)} "
                    f"(quote fields that contain {delimiter!r})",
                )
                continue
            yield reader.line_num, row[text_at], row[label_at]

    def _jsonl_rows(
        self, lines: Iterable[str], problems: RowProblems
    ) -> Iterator[tuple[int, object, object]]:
        for line, content in enumerate(lines, start=1):
            if not content.strip():
                continue
            try:
                obj = json.loads(content)
            except json.JSONDecodeError as exc:
                problems.add(
                    line, f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one object"
                )
                continue
            if not isinstance(obj, dict):
                problems.add(line, f"expected a JSON object, got {type(obj).__name__}")
                continue
            missing = [key for key in (self.text_column, self.label_column) if key not in obj]
            if missing:
                problems.add(
                    line,
                    f"missing key {', '.join(map(repr, missing))} (keys found: {sorted(obj)}); "
                    "set data.source.text_column / data.source.label_column if it is named differently",
                )
                continue
            yield line, obj[self.text_column], obj[self.label_column]
