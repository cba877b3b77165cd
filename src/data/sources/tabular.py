"""Labelled texts from CSV, TSV or JSONL files, one file per split, labels given as names or integer ids."""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from src.data.records import TASKS, LabelledData, Split, Task
from src.data.sources.rows import RowProblems, require_file, where
from src.data.text_files import AUTO, check_encoding, codec_for, decode_error, require_content, resolve
from src.errors import DataError

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}
_LIKELY_DELIMITERS = (",", ";", "|", "/")  # a label token holding one probably holds several labels
_JSON_SEPARATORS = re.compile(r"[ \t\n\r,]*")
ENCODING_KEY = "data.encoding"


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

    Without ``labels`` the vocabulary comes from the train file: integer tokens are ids (their names are the ids
    that occur, so ids 0 and 5 make two labels, not six), otherwise the sorted unique names. ``task="auto"`` decides
    only on evidence, which it names: multilabel when a train record has several labels or labels written as a JSON
    list; multiclass when every train record has exactly one; records without a label and no such evidence are an
    error (a forgotten label, or a multi-label file: the user says which). ``encoding`` is the files' text encoding
    (``auto``: detected per file). What the reading found (the task's reason, the encodings, warnings about label
    tokens) comes back in :attr:`LabelledData.facts`.
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
        encoding: str = AUTO,
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
        self.encoding = check_encoding(encoding, ENCODING_KEY)

    def load(self) -> LabelledData:
        encodings: dict[str, dict[str, str]] = {}  # split -> {"path", "encoding"}
        records = {split: self._read(Path(path), split, encodings) for split, path in self.files.items()}
        return self._labelled(records, {"encodings": encodings})

    def _labelled(self, records: dict[str, list[_Record]], facts: dict[str, object]) -> LabelledData:
        """The records of every split as label ids over one vocabulary, with the task and the evidence for it
        (``self.files`` names each split in the messages)."""
        warnings: list[str] = []
        names, lookup = self._vocabulary(records["train"], warnings)
        splits = {
            split: self._encode(self.files[split], rows, names, lookup)
            for split, rows in records.items()
        }
        warnings += self._delimiter_warnings(records["train"])
        task, reason = self._task(records["train"])
        return LabelledData(splits, names, task, facts={"task_reason": reason, **facts, "warnings": warnings})

    def _vocabulary(self, train: list[_Record], warnings: list[str]) -> tuple[list[str], Callable[[str], int | None]]:
        """Label names, and the function from a token to its label index (None: unknown)."""
        if self.labels is not None:
            index = {name: i for i, name in enumerate(self.labels)}
            size = len(self.labels)
            return self.labels, lambda token: index.get(
                token, int(token) if _is_id(token) and int(token) < size else None)
        tokens = {token for record in train for token in record.tokens}
        if not tokens:
            raise DataError(
                f"{self.files['train']}: no record has a label, so the label vocabulary is unknown. "
                "Pass data.source.labels=[...] with the label names."
            )
        if all(_is_id(token) for token in tokens):
            ids = sorted({int(token) for token in tokens})
            absent = sorted(set(range(ids[-1] + 1)) - set(ids))
            if absent:
                warnings.append(
                    f"{self.files['train']}: integer label ids {_listing(absent)} (between 0 and {ids[-1]}) occur in "
                    f"no train row, so they are not labels: the {len(ids)} labels are the ids that occur "
                    f"({_listing(ids)}). If the model must know the others, pass data.source.labels=[...] listing "
                    "every label name in id order."
                )
            index = {str(i): position for position, i in enumerate(ids)}
            return [str(i) for i in ids], lambda token: index.get(str(int(token))) if _is_id(token) else None
        index = {name: i for i, name in enumerate(sorted(tokens))}
        return sorted(tokens), index.get

    def _encode(self, path: str, records: list[_Record], names: list[str],
                lookup: Callable[[str], int | None]) -> Split:
        problems = RowProblems(path)
        labels = []
        for record in records:
            ids = set()
            for token in record.tokens:
                i = lookup(token)
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

    def _delimiter_warnings(self, records: list[_Record]) -> list[str]:
        """Label tokens that hold another likely delimiter: ``joy;surprise`` with ``,`` is one combination label."""
        rows: dict[tuple[str, str], list[int]] = {}
        for record in records:
            for token in record.tokens:
                for mark in _LIKELY_DELIMITERS:
                    if mark != self.label_delimiter and mark in token:
                        rows.setdefault((token, mark), []).append(record.line)
        path = self.files["train"]
        return [
            f"label {token!r} contains {mark!r} ({len(lines)} train row(s): {where(path, lines)}): if {mark!r} "
            f"separates labels, set data.source.label_delimiter={mark!r} (now "
            f"{self.label_delimiter!r}); otherwise it is one label named so."
            for (token, mark), lines in rows.items()
        ]

    def _task(self, records: list[_Record]) -> tuple[Task, str]:
        """The task and the evidence that decided it (rows named)."""
        if self.task != "auto":
            return self.task, f"set by data.source.task={self.task}"  # type: ignore[return-value]  # checked in __init__
        path = self.files["train"]
        several = [r.line for r in records if len(set(r.tokens)) > 1]
        if several:
            return "multilabel", f"{len(several)} train row(s) have several labels: {where(path, several)}"
        listed = [r.line for r in records if r.listed]
        if listed:
            return "multilabel", f"labels written as JSON lists in {len(listed)} train row(s): {where(path, listed)}"
        empty = [r.line for r in records if not r.tokens]
        if empty:
            raise DataError(
                f"{path}: cannot tell single-label from multi-label data: no train row has several labels, but "
                f"{len(empty)} row(s) have none: {where(path, empty)}. A single-label (multiclass) row needs its "
                "label: fill those cells or remove the rows; or, if a row may have no label, set "
                "data.source.task=multilabel."
            )
        return "multiclass", f"every train row has exactly one label ({len(records)} rows)"

    def _read(self, path: Path, split: str, encodings: dict[str, dict[str, str]]) -> list[_Record]:
        key = f"data.source.{split}"
        require_file(path, key)
        require_content(path, key)
        fmt = self.format if self.format != "auto" else _EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"{path}: cannot tell the format from the extension {path.suffix!r}. "
                f"Set data.source.format to one of {', '.join(FORMATS)}."
            )
        encoding = resolve(path, self.encoding, ENCODING_KEY)
        encodings[split] = {"path": str(path), "encoding": encoding}
        problems = RowProblems(path)
        try:
            with path.open(encoding=codec_for(encoding), newline="") as lines:
                if fmt == "jsonl":
                    rows = self._json_rows(lines, path, problems)
                else:
                    rows = self._delimited_rows(lines, path, fmt, problems)
                records = self._records(rows, problems, lambda value: _tokens(value, self.label_delimiter))
        except UnicodeDecodeError:
            raise decode_error(path, encoding, ENCODING_KEY) from None
        problems.raise_if_any("Fix or remove these rows.")
        if not records:
            raise DataError(f"{path}: no records. Put at least one row in the file {key} points to.")
        return records

    @staticmethod
    def _records(rows: Iterable[tuple[int, object, object]], problems: RowProblems,
                 tokens: Callable[[object], tuple[list[str], bool]]) -> list[_Record]:
        """The ``(line, text, label value)`` rows with a usable text, their labels as tokens; the others are
        problems."""
        records = []
        for line, text, value in rows:
            if not isinstance(text, str):
                problems.add(line, f"text is {type(text).__name__}, not a string")
            elif not text.strip():
                problems.add(line, "empty text: give the row a text or remove it")
            elif "\x00" in text:
                problems.add(line, "the text contains NUL characters (\\x00): remove them")
            else:
                try:
                    records.append(_Record(text, *tokens(value), line))
                except (TypeError, ValueError) as exc:
                    problems.add(line, str(exc))
        return records

    def _delimited_rows(
        self, lines: Iterable[str], path: Path, fmt: str, problems: RowProblems
    ) -> Iterator[tuple[int, object, object]]:
        delimiter = _DELIMITERS[fmt]
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader, [])
        if not header:
            raise DataError(f"{path}: the first line is blank; a {fmt.upper()} file starts with its header row "
                            f"(e.g. {self.text_column}{delimiter}{self.label_column}).")
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

    def _json_rows(
        self, lines: IO[str], path: Path, problems: RowProblems
    ) -> Iterator[tuple[int, object, object]]:
        """JSON Lines, or a JSON array of objects (said in the log): the file is read whole either way."""
        content = lines.read()
        objects = _json_array(content, path)
        if objects is not None:
            log.info(f"{path}: this is a JSON array, not JSON Lines: read its {len(objects)} elements as records")
        else:
            objects = list(self._json_lines(content, problems))
        for line, obj in objects:
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

    @staticmethod
    def _json_lines(content: str, problems: RowProblems) -> Iterator[tuple[int, object]]:
        # split at "\n" only: a raw U+2028 is legal inside a JSON string, str.splitlines would cut there
        for line, text in enumerate(content.split("\n"), start=1):
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as exc:
                problems.add(
                    line, f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one object"
                )


def _json_array(content: str, path: Path) -> list[tuple[int, object]] | None:
    """The elements of a file that is one JSON array, each with the line it starts on; None for anything else
    (JSON Lines). A file that starts like an array but is broken is an error here, not one per line."""
    if not content.lstrip().startswith("["):
        return None
    try:
        parsed = json.loads(content)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            return None  # several JSON values, one per line: JSON Lines whose rows are lists
        raise DataError(f"{path}: starts like a JSON array but is not valid JSON ({exc.msg} at line {exc.lineno}, "
                        f"column {exc.colno}). Fix the file, or write one JSON object per line (JSON Lines).") from None
    if not isinstance(parsed, list):
        return None
    decoder, at, line, elements = json.JSONDecoder(), content.index("[") + 1, 1, []
    line += content.count("\n", 0, at)
    for _ in parsed:
        start = _JSON_SEPARATORS.match(content, at).end()
        line += content.count("\n", at, start)
        obj, end = decoder.raw_decode(content, start)
        elements.append((line, obj))
        line += content.count("\n", start, end)
        at = end
    return elements


def _listing(values: list[int]) -> str:
    shown = ", ".join(map(str, values[:10]))
    return shown + (f" and {len(values) - 10} more" if len(values) > 10 else "")
