"""Labelled document files (PDF, DOCX, XLSX, HTML, plain text): a folder per label, or a manifest for multi-label.

Each split (``train``, optional ``val``/``test``) is either a directory whose sub-folder names are the labels (one
label per file, files anywhere below the label folder), or a manifest CSV/TSV/JSONL read like ``data=csv`` with a
path column instead of a text column (paths relative to the manifest). Texts are extracted in worker processes and
cached by file content, so a second run extracts nothing. A file without text is never dropped silently: it is
listed with its reason in the log and the report file, and stops the run unless ``on_unreadable=skip_and_report``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from src.data.extract import FORMATS, VERSION, Extracted, extract_file, library_version
from src.data.records import TASKS, LabelledData, Split
from src.data.sources.tabular import TabularSource
from src.data.text_files import AUTO
from src.errors import ConfigError, DataError
from src.io import atomic_path, write_json
from src.progress import progress

log = logging.getLogger(__name__)
ON_UNREADABLE = ("error", "skip_and_report")
SHOWN = 5  # unreadable files named in the error message; the report lists all
INSTALL = 'pip install -e ".[documents]"'


def default_workers() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cores)


class DocumentSource:
    """Reads the files of ``train`` (required), ``val`` and ``test`` into :class:`LabelledData` of their texts.

    ``labels``/``task``/``label_column``/``label_delimiter``/``encoding`` mean what they mean for ``data=csv`` (of a
    manifest);
    a directory tree is multi-class with its folder names as labels. :attr:`stats` counts the files read from the
    cache and extracted by the last :meth:`load`.
    """

    def __init__(
        self,
        train: str,
        val: str | None = None,
        test: str | None = None,
        *,
        path_column: str = "path",
        label_column: str = "labels",
        label_delimiter: str | None = ",",
        labels: list[str] | None = None,
        task: str = "auto",
        workers: int | None = None,
        cache_dir: str | None = None,
        on_unreadable: str = "error",
        report: str | None = None,
        encoding: str = AUTO,
    ) -> None:
        if on_unreadable not in ON_UNREADABLE:
            raise ConfigError(f"data.source.on_unreadable must be one of {', '.join(ON_UNREADABLE)}; "
                              f"got {on_unreadable!r}")
        if task not in ("auto", *TASKS):
            raise DataError(f"data.source.task must be one of auto, {', '.join(TASKS)}; got {task!r}")
        self.files = {split: path for split, path in (("train", train), ("val", val), ("test", test)) if path}
        self.path_column = path_column
        self.label_column = label_column
        self.label_delimiter = label_delimiter
        self.labels = [str(name) for name in labels] if labels is not None else None
        self.task = task
        self.workers = workers or default_workers()
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.on_unreadable = on_unreadable
        self.report = Path(report) if report else None
        self.encoding = encoding
        self.stats = {"cached": 0, "extracted": 0}

    def load(self) -> LabelledData:
        listed = self._list()
        paths = sorted({path for split in listed.splits.values() for path in split.texts})
        extracted = self._extract(paths)
        unreadable = [(name, path, extracted[path].reason) for name, split in listed.splits.items()
                      for path in split.texts if extracted[path].text is None]
        if unreadable:
            listed.facts.setdefault("warnings", []).append(self._handle(unreadable, len(paths)))
        splits = {}
        for name, split in listed.splits.items():
            keep = [i for i, path in enumerate(split.texts) if extracted[path].text is not None]
            if not keep:
                raise DataError(f"data.source.{name}: none of its {len(split)} file(s) has readable text "
                                f"(see {self.report or 'the log'}).")
            kept = split.subset(keep)
            splits[name] = Split([extracted[path].text for path in kept.texts], kept.labels, kept.origin)
        return listed.with_splits(splits)

    # ---------------------------------------------------------------- which files, which labels

    def _list(self) -> LabelledData:
        """The splits with file paths as texts."""
        for split, path in self.files.items():
            if not Path(path).exists():
                raise DataError(f"data.source.{split}: no such directory or file: {path} (relative paths are read "
                                f"from {Path.cwd()}). Set data.source.{split}=<a directory of label folders, or a "
                                "manifest file>.")
        folders = {split: Path(path).is_dir() for split, path in self.files.items()}
        if len(set(folders.values())) > 1:
            raise DataError(f"data.source: mixes directories and manifest files ({self.files}). Give every split "
                            "as a directory of label folders, or every split as a manifest.")
        return self._folders() if folders["train"] else self._manifests()

    def _manifests(self) -> LabelledData:
        table = TabularSource(**self.files, text_column=self.path_column, label_column=self.label_column,
                              label_delimiter=self.label_delimiter, labels=self.labels, task=self.task,
                              encoding=self.encoding).load()
        splits = {}
        for name, split in table.splits.items():
            base = Path(self.files[name]).parent
            paths = [str(base / path) for path in split.texts]  # an absolute path stays itself
            splits[name] = Split(paths, split.labels, [f"{o} ({p})" for o, p in zip(split.origin, paths)])
        return table.with_splits(splits)

    def _folders(self) -> LabelledData:
        trees = {split: self._tree(Path(path), split) for split, path in self.files.items()}
        names = self.labels or sorted(trees["train"])
        index = {name: i for i, name in enumerate(names)}
        splits = {}
        for split, tree in trees.items():
            unknown = sorted(set(tree) - set(index))
            if unknown:
                raise DataError(f"data.source.{split}: label folders {unknown} are not among the labels {names}. "
                                "Rename them, or list every label in data.source.labels=[...].")
            files = [(str(path), index[label]) for label in sorted(tree) for path in tree[label]]
            splits[split] = Split([f for f, _ in files], [[i] for _, i in files], [f for f, _ in files])
        task, reason = (self.task, "data.source.task") if self.task != "auto" else ("multiclass", "one label folder "
                                                                                              "per file")
        return LabelledData(splits, names, task, facts={"task_reason": reason})

    @staticmethod
    def _tree(root: Path, split: str) -> dict[str, list[Path]]:
        """Label folder -> its files (at any depth, sorted); hidden files and folders are left out, and counted."""
        tree: dict[str, list[Path]] = {}
        loose, hidden = [], 0
        for path in sorted(root.rglob("*")):
            parts = path.relative_to(root).parts
            if any(part.startswith(".") for part in parts):
                hidden += path.is_file()
            elif path.is_file() and len(parts) == 1:
                loose.append(path.name)
            elif path.is_file():
                tree.setdefault(parts[0], []).append(path)
        if loose:
            raise DataError(f"data.source.{split}: {len(loose)} file(s) directly in {root} have no label folder "
                            f"({', '.join(loose[:SHOWN])}). Move each into a sub-folder named after its label.")
        if not tree:
            raise DataError(f"data.source.{split}: no files in label sub-folders of {root}. Put each document in "
                            f"{root}/<label>/, or give a manifest file.")
        if hidden:
            log.info("documents: %s: left out %d hidden file(s) (names starting with '.')", root, hidden)
        return tree

    # ---------------------------------------------------------------- extraction, cached

    def _extract(self, paths: list[str]) -> dict[str, Extracted]:
        """Every path's text or reason: from the cache when the same bytes were extracted before, else in
        ``workers`` processes."""
        self._require_libraries(paths)
        results: dict[str, Extracted] = {}
        todo: dict[str, Path | None] = {}  # path -> its cache file
        hits = 0
        for path in paths:
            suffix = Path(path).suffix.lower()
            if suffix not in FORMATS:
                shown = suffix or "(no extension)"
                results[path] = Extracted(reason=f"unsupported file type {shown}: convert it to one of "
                                                 f"{', '.join(sorted(FORMATS))}")
                continue
            try:
                content = Path(path).read_bytes()
            except OSError as exc:
                results[path] = Extracted(reason=f"cannot open the file ({exc.strerror or exc})")
                continue
            entry = self._cache_file(content, suffix)
            if entry is not None and entry.is_file():
                results[path] = Extracted(**json.loads(entry.read_text(encoding="utf-8")))
                hits += 1
            else:
                todo[path] = entry
        self.stats = {"cached": hits, "extracted": len(todo)}
        for path, result in self._run(list(todo)):
            results[path] = result
            if todo[path] is not None:
                write_json(todo[path], result.__dict__)
        for path in paths:
            if results[path].encoding:
                log.debug("documents: %s: encoding %s", path, results[path].encoding)
        log.info("documents: %d file(s): %d from the cache%s, %d extracted", len(paths), self.stats["cached"],
                 f" ({self.cache_dir})" if self.cache_dir else "", self.stats["extracted"])
        return results

    def _run(self, paths: list[str]):
        """(path, extracted) pairs in the order of ``paths``, with a progress bar."""
        if not paths:
            return
        with progress("extracting document text", total=len(paths), unit="files") as advance:
            if self.workers == 1 or len(paths) == 1:
                for path in paths:
                    yield path, extract_file(path)
                    advance(1)
                return
            # fork: a worker starts at once with the modules already imported (spawn would import the entry point,
            # torch included, again in each); it runs only extract_file, which uses no threads. Windows has only spawn.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            context = multiprocessing.get_context(method)
            chunk = max(1, min(16, len(paths) // (4 * self.workers)))  # few round trips, yet a moving bar
            with ProcessPoolExecutor(min(self.workers, len(paths)), mp_context=context) as pool:
                for path, result in zip(paths, pool.map(extract_file, paths, chunksize=chunk)):
                    yield path, result
                    advance(1)

    def _cache_file(self, content: bytes, suffix: str) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(content).hexdigest()
        key = hashlib.sha256(f"{VERSION}:{suffix}:{library_version(suffix)}:{digest}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    @staticmethod
    def _require_libraries(paths: list[str]) -> None:
        """The ``documents`` extra's libraries that these files need, all present (or one message naming them)."""
        needed = {FORMATS[s][1:] for s in {Path(p).suffix.lower() for p in paths} if s in FORMATS}
        missing = sorted(dist for dist, module in needed if importlib.util.find_spec(module) is None)
        if missing:
            raise ConfigError(f"reading these documents needs {', '.join(missing)}, which are not installed: "
                              f"{INSTALL} (the documents extra).")

    # ---------------------------------------------------------------- unreadable files

    def _handle(self, unreadable: list[tuple[str, str, str | None]], total: int) -> str:
        """Write the report, log every file, and stop unless told to skip them; else the warning for the data
        checks."""
        if self.report is not None:
            with atomic_path(self.report) as temporary, temporary.open("w", newline="", encoding="utf-8") as out:
                writer = csv.writer(out)
                writer.writerow(["split", "path", "reason"])
                writer.writerows(unreadable)
        where = f"all listed in {self.report}" if self.report else "all listed in the log above"
        for split, path, reason in unreadable:
            log.warning("documents: unreadable (%s): %s: %s", split, path, reason)
        shown = "\n".join(f"  {path}: {reason}" for _, path, reason in unreadable[:SHOWN])
        more = f"\n  ... and {len(unreadable) - SHOWN} more" if len(unreadable) > SHOWN else ""
        summary = f"{len(unreadable)} of {total} document file(s) have no readable text ({where}):\n{shown}{more}"
        if self.on_unreadable == "error":
            raise DataError(f"{summary}\nFix or remove them, or pass data.source.on_unreadable=skip_and_report to "
                            "train without them.")
        log.warning("documents: left out %s", summary)
        return f"left out {len(unreadable)} unreadable document file(s) ({where})"

