"""Any Hugging Face ``datasets`` dataset: a hub id (with network, or from a cache offline), a directory written by
``save_to_disk``, or a directory of data files (parquet, json/jsonl, csv) that ``datasets.load_dataset`` reads.

Rows become records exactly as ``data=csv`` reads a file (:class:`TabularSource`'s label forms, vocabulary, task
evidence and row checks); a ``ClassLabel`` or list-of-``ClassLabel`` column gives its names from the dataset's
features. Whatever keeps the dataset from loading (no network, offline mode without a cached copy, a wrong name,
config, split or column) stops with one :class:`DataError` naming the key to change, before any training work.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from src.data.records import SPLITS, LabelledData
from src.data.sources.rows import RowProblems
from src.data.sources.tabular import TabularSource, _Record, _tokens
from src.errors import ConfigError, DataError

log = logging.getLogger(__name__)

INSTALL = 'pip install -e ".[hf]"'
AUTO = "auto"
USUAL_NAMES = {"train": ("train",), "val": ("validation", "valid", "val", "dev"), "test": ("test",)}
DEFAULT_SPLITS = {"train": "train", "val": AUTO, "test": AUTO}
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes (a DatasetDict, a Dataset)
_WITHOUT_NETWORK = ("Without network: set HF_DATASETS_CACHE (or data.source.cache_dir) to a cache that has this "
                    "dataset and HF_HUB_OFFLINE=1; or point data.source.name at a local copy (a directory written by "
                    "save_to_disk, or of parquet/json/csv files); or use data=csv / data=jsonl.")


def offline(datasets: Any) -> bool:
    """HF_HUB_OFFLINE or HF_DATASETS_OFFLINE set to a true value, now or when ``datasets`` was imported (it reads
    them then)."""
    now = any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE") for name in _OFFLINE_VARIABLES)
    return now or bool(getattr(datasets.config, "HF_HUB_OFFLINE", False))


class HuggingFaceSource(TabularSource):
    """Reads the ``splits`` of the dataset ``name`` (our split -> the dataset's split name; ``auto``: its usual
    validation/test split when it has one; null: none, so a validation split is carved from train).

    ``text_column``, ``label_column``, ``label_delimiter``, ``labels`` and ``task`` mean what they mean for
    ``data=csv``; ``config``, ``revision``, ``cache_dir`` and ``trust_remote_code`` go to ``datasets.load_dataset``.
    Messages name a record as ``<name>/<dataset split>:<row index>``.
    """

    def __init__(
        self,
        name: str,
        config: str | None = None,
        splits: Mapping[str, str | None] | None = None,
        *,
        text_column: str = "text",
        label_column: str = "label",
        label_delimiter: str | None = ",",
        labels: list[str] | None = None,
        task: str = "auto",
        revision: str | None = None,
        cache_dir: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(name, text_column=text_column, label_column=label_column, label_delimiter=label_delimiter,
                         labels=labels, task=task)
        chosen = {**DEFAULT_SPLITS, **(dict(splits) if splits is not None else {})}
        if set(chosen) - set(SPLITS) or chosen["train"] in (None, "", AUTO):
            raise ConfigError(f"data.source.splits={chosen}: must map train (to a split name of the dataset), val "
                              "and test (a split name, auto or null), and nothing else.")
        self.given_labels = self.labels
        self.name = str(name)
        self.config = config
        self.splits = chosen
        self.revision = revision
        self.cache_dir = cache_dir
        self.trust_remote_code = trust_remote_code

    def load(self) -> LabelledData:
        found = self._open()
        chosen = self._chosen(list(found))
        self.files = {ours: f"{self.name}/{theirs}" for ours, theirs in chosen.items()}  # names records in messages
        classes = _classes(found[chosen["train"]].features.get(self.label_column))
        self.labels = self.given_labels or (list(classes.names) if classes is not None else None)
        records = {ours: self._rows(found[theirs], self.files[ours]) for ours, theirs in chosen.items()}
        log.info("hf: %s%s: splits %s (ours: the dataset's; the dataset has %s)", self.name,
                 f" ({self.config})" if self.config else "", chosen, list(found))
        return self._labelled(records, {})

    # ---------------------------------------------------------------- which dataset, which splits

    def _open(self) -> Mapping[str, Any]:
        """The dataset's splits (split name -> ``datasets.Dataset``)."""
        datasets = _datasets()
        local = Path(self.name).expanduser()
        if local.is_dir() and any((local / marker).is_file() for marker in _SAVED_MARKERS):
            found = datasets.load_from_disk(str(local))
            return found if isinstance(found, Mapping) else {"train": found}
        if not local.exists():
            if self.name.startswith(("/", "./", "../", "~")):
                raise DataError(f"data.source.name={self.name}: no such directory (relative paths are read from "
                                f"{Path.cwd()}). Set data.source.name to a hub id or an existing dataset directory.")
            if not offline(datasets):
                self._check_hub()
        kwargs: dict[str, Any] = {"revision": self.revision, "cache_dir": self.cache_dir}
        if self.trust_remote_code:  # datasets 4 removed dataset scripts, and with them this argument
            if "trust_remote_code" not in inspect.signature(datasets.load_dataset).parameters:
                raise ConfigError(f"data.source.trust_remote_code=true: datasets {datasets.__version__} runs no "
                                  "dataset scripts; use a dataset with data files (parquet), or datasets<4.")
            kwargs["trust_remote_code"] = True
        try:
            return datasets.load_dataset(str(local) if local.exists() else self.name, self.config,
                                         **{k: v for k, v in kwargs.items() if v is not None})
        except Exception as exc:  # offline without a cached copy, a wrong config: each says what failed and the fix
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            if local.exists():
                raise DataError(f"data.source.name={self.name}: datasets.load_dataset cannot read this directory "
                                f"({detail}). Give a directory written by save_to_disk, or of parquet/json/csv "
                                "files, and check data.source.config.") from None
            if offline(datasets) or isinstance(exc, (ConnectionError, TimeoutError)):
                mode = " (offline mode: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)" if offline(datasets) else ""
                raise DataError(f"data.source.name={self.name}: cannot load it{mode} ({detail}). {_WITHOUT_NETWORK}"
                                ) from None
            raise DataError(f"data.source.name={self.name}: datasets.load_dataset failed ({detail}). Check "
                            "data.source.name, data.source.config (the subset) and data.source.revision.") from None

    def _check_hub(self) -> None:
        """One quick request before ``load_dataset``, which retries an unreachable hub for many seconds."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        try:
            HfApi().dataset_info(self.name, revision=self.revision, timeout=10)
        except GatedRepoError:
            raise DataError(f"data.source.name={self.name}: the dataset is gated: accept its terms on the hub and "
                            "log in (`hf auth login`), or set HF_TOKEN.") from None
        except RevisionNotFoundError:
            raise DataError(f"data.source.revision={self.revision}: no such revision of {self.name} on the hub. "
                            "Set data.source.revision to a branch, tag or commit of it, or null.") from None
        except RepositoryNotFoundError:
            raise DataError(f"data.source.name={self.name}: no such dataset on the Hugging Face hub (or it is "
                            "private: log in with `hf auth login`). Check the name (owner/name), or give a local "
                            "dataset directory.") from None
        except HfHubHTTPError:
            return  # the hub answered; load_dataset says what it thinks
        except Exception as exc:  # DNS, refused connection, timeout, proxy: the transport's own error types
            detail = " ".join(f"{type(exc).__name__}: {exc}".split())
            raise DataError(f"data.source.name={self.name}: the Hugging Face hub is unreachable ({detail}). "
                            f"{_WITHOUT_NETWORK}") from None

    def _chosen(self, available: list[str]) -> dict[str, str]:
        """Our split -> the dataset's; a name that is not there is an error listing those that are."""
        chosen = {}
        for ours, theirs in self.splits.items():
            if theirs == AUTO:
                theirs = next((name for name in USUAL_NAMES[ours] if name in available), None)
            elif theirs is not None and theirs not in available:
                raise DataError(f"data.source.splits.{ours}={theirs}: {self.name} has no split {theirs!r}; its "
                                f"splits are {available}. Set data.source.splits.{ours} to one of them"
                                f"{'' if ours == 'train' else ' (or null: none)'}.")
            if theirs is not None:
                chosen[ours] = theirs
        return chosen

    # ---------------------------------------------------------------- rows

    def _rows(self, dataset: Any, where: str) -> list[_Record]:
        missing = [column for column in (self.text_column, self.label_column) if column not in dataset.column_names]
        if missing:
            raise DataError(f"{where}: no column {', '.join(map(repr, missing))} (its columns: "
                            f"{dataset.column_names}). Set data.source.text_column / data.source.label_column.")
        problems = RowProblems(where)
        tokens = self._label_tokens(dataset.features[self.label_column])
        rows = zip(range(len(dataset)), dataset[self.text_column], dataset[self.label_column])
        records = self._records(rows, problems, tokens)
        problems.raise_if_any("Fix or remove these rows, or set data.source.text_column / data.source.label_column.")
        if not records:
            raise DataError(f"{where}: no records. Choose a split with rows in data.source.splits.")
        return records

    def _label_tokens(self, feature: Any) -> Callable[[object], tuple[list[str], bool]]:
        """Label value -> (tokens, written as a list), as for a CSV cell; ``ClassLabel`` ids become its names (-1
        means no label), a missing value (None) no label."""
        classes = _classes(feature)
        if classes is None:
            return lambda value: ([], False) if value is None else _tokens(value, self.label_delimiter)

        def named(value: object) -> str:
            if not isinstance(value, int) or not 0 <= value < classes.num_classes:
                raise ValueError(f"label id {value!r} is not one of the column's {classes.num_classes} classes")
            return classes.names[value]

        if classes is feature:
            return lambda value: ([], False) if value in (None, -1) else ([named(value)], False)
        return lambda value: ([named(item) for item in value or []], True)


def _classes(feature: Any) -> Any:
    """The ``ClassLabel`` of a label column (itself, or a list column's items); None for any other feature."""
    from datasets import ClassLabel

    inner = getattr(feature, "feature", None)  # a list feature's item
    return feature if isinstance(feature, ClassLabel) else inner if isinstance(inner, ClassLabel) else None


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise ConfigError(f"data=hf needs the `datasets` package, which is not installed: {INSTALL}") from None
    return datasets
