"""data=hf: real ``datasets`` datasets written to tmp_path (save_to_disk, parquet and JSON data files), their
ClassLabel names, a tiny training run on each task, and the one-message failures (offline, unreachable hub, a wrong
column or split, no ``datasets`` package)."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from src.data.sources.hf import HuggingFaceSource  # noqa: E402
from src.errors import ConfigError, DataError  # noqa: E402
from src.train import train  # noqa: E402
from tests.helpers import QUIET, WORDS, compose_train, run_cli, write_dataset  # noqa: E402

NAMES = [*sorted(WORDS), "zeal"]  # "zeal" is on no row: a ClassLabel name still is a label


def keyword_rows(tmp_path: Path, multilabel: bool) -> dict[str, tuple[list[str], list[list[str]]]]:
    """The helpers' keyword splits as python lists: split -> (texts, label names per text)."""
    rows = {}
    (tmp_path / "jsonl").mkdir()
    for split, path in write_dataset(tmp_path / "jsonl", multilabel=multilabel, rows=36).items():
        records = [json.loads(line) for line in path.read_text().splitlines()]
        rows[split] = ([r["text"] for r in records],
                       [r["labels"] if multilabel else [r["labels"]] for r in records])
    return rows


def saved(tmp_path: Path, rows: dict[str, tuple[list[str], list[list[str]]]], multilabel: bool,
          names: dict[str, str]) -> Path:
    """A DatasetDict with ClassLabel ids (a list of them per row when multi-label), written by save_to_disk."""
    classes = datasets.ClassLabel(names=NAMES)
    label = datasets.Sequence(classes) if multilabel else classes
    features = datasets.Features({"id": datasets.Value("int32"), "sentence": datasets.Value("string"), "tags": label})
    parts = {}
    for split, (texts, labels) in rows.items():
        ids = [[NAMES.index(n) for n in row] if multilabel else NAMES.index(row[0]) for row in labels]
        parts[names[split]] = datasets.Dataset.from_dict(
            {"id": list(range(len(texts))), "sentence": texts, "tags": ids}, features=features)
    directory = tmp_path / "saved"
    datasets.DatasetDict(parts).save_to_disk(str(directory))
    return directory


def run_on(tmp_path: Path, tiny_bert: str, directory: Path, *extra: str) -> dict:
    cfg = compose_train(tmp_path, ["data=hf", f"data.source.name={directory}", "data.source.text_column=sentence",
                                   "data.source.label_column=tags", f"model.name_or_path={tiny_bert}",
                                   "trainer.max_epochs=1", "data.batch_size=8", "logger=none", *QUIET, *extra])
    return train(cfg)


def test_multilabel_classlabel_lists_read_as_written_and_train(tmp_path, tiny_bert):
    rows = keyword_rows(tmp_path, multilabel=True)
    directory = saved(tmp_path, rows, True, {"train": "train", "val": "validation", "test": "test"})

    data = HuggingFaceSource(str(directory), text_column="sentence", label_column="tags").load()

    assert data.label_names == NAMES and data.task == "multilabel"
    for split, (texts, labels) in rows.items():
        assert data.splits[split].texts == texts
        assert [[data.label_names[i] for i in ids] for ids in data.splits[split].labels] == [sorted(r) for r in labels]
    assert data.splits["val"].origin[2] == f"{directory}/validation:2"
    summary = run_on(tmp_path, tiny_bert, directory)
    assert summary["task"] == "multilabel" and summary["label_names"] == NAMES


def test_multiclass_classlabel_carves_val_from_train_and_trains(tmp_path, tiny_bert, caplog):
    rows = keyword_rows(tmp_path, multilabel=False)
    rows.pop("val")
    directory = saved(tmp_path, rows, False, {"train": "train", "test": "holdout"})

    data = HuggingFaceSource(str(directory), splits={"test": "holdout"}, text_column="sentence",
                             label_column="tags").load()

    assert data.label_names == NAMES and data.task == "multiclass"
    assert set(data.splits) == {"train", "test"}  # no validation split: the data module carves one
    assert data.splits["test"].texts == rows["test"][0]
    assert [[NAMES[i] for i in ids] for ids in data.splits["test"].labels] == rows["test"][1]
    summary = run_on(tmp_path, tiny_bert, directory, "data.source.splits.test=holdout")
    assert summary["task"] == "multiclass" and summary["label_names"] == NAMES


def test_a_directory_of_parquet_files_with_delimited_names(tmp_path):
    import pandas as pd

    texts = {"train": ["sunny day", "rude and scary", "dark night"], "test": ["great party"]}
    labels = {"train": ["joy", "anger,fear", "fear"], "test": ["joy"]}
    (tmp_path / "files").mkdir()
    for split in texts:
        pd.DataFrame({"text": texts[split], "label": labels[split]}).to_parquet(tmp_path / "files" / f"{split}.parquet")

    data = HuggingFaceSource(str(tmp_path / "files"), cache_dir=str(tmp_path / "cache")).load()

    assert data.label_names == ["anger", "fear", "joy"] and data.task == "multilabel"
    assert data.splits["train"].texts == texts["train"]
    assert data.splits["train"].labels == [[2], [0, 1], [1]]
    assert data.splits["test"].labels == [[2]] and "val" not in data.splits


def test_a_directory_of_json_lines_with_id_lists_and_a_renamed_split(tmp_path):
    (tmp_path / "files").mkdir()
    rows = {"train": [("a b", [0]), ("c d", [1, 2]), ("e", [])], "dev": [("f", [2])]}
    for split, pairs in rows.items():
        (tmp_path / "files" / f"{split}.jsonl").write_text(
            "".join(json.dumps({"body": t, "label": ids}) + "\n" for t, ids in pairs))

    data = HuggingFaceSource(str(tmp_path / "files"), text_column="body", cache_dir=str(tmp_path / "cache")).load()

    assert data.label_names == ["0", "1", "2"] and data.task == "multilabel"
    assert data.splits["train"].labels == [[0], [1, 2], []]
    assert data.splits["val"].texts == ["f"]  # auto: the dataset's "dev" split (load_dataset calls it validation)


def test_offline_hub_name_fails_at_once_with_one_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # datasets reads the variables when imported
    started = time.monotonic()

    with pytest.raises(DataError) as info:
        HuggingFaceSource("labelwise-tests/no-such-dataset", cache_dir=str(tmp_path / "empty-cache")).load()

    message = str(info.value)
    assert time.monotonic() - started < 10
    assert len(message.splitlines()) == 1
    assert message.startswith("data.source.name=labelwise-tests/no-such-dataset: cannot load it (offline mode")
    for fix in ("HF_DATASETS_CACHE", "data.source.cache_dir", "save_to_disk", "data=csv"):
        assert fix in message


def test_unreachable_hub_fails_at_once_without_retries(tmp_path, monkeypatch):
    import huggingface_hub.constants

    with socket.socket() as sock:  # a port nobody listens on: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # both read the variables when imported
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    started = time.monotonic()

    with pytest.raises(DataError, match=r"^data.source.name=owner/data: the Hugging Face hub is unreachable") as info:
        HuggingFaceSource("owner/data", cache_dir=str(tmp_path / "cache")).load()

    assert time.monotonic() - started < 10
    assert "connect" in str(info.value).lower()  # the transport's own error: refused
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "data=csv / data=jsonl" in str(info.value)


@pytest.mark.slow
def test_cli_offline_stops_before_training_with_one_error_line(tmp_path, tiny_bert):
    result = run_cli(tmp_path, "data=hf", "data.source.name=go_emotions", f"model.name_or_path={tiny_bert}",
                     "logger=none", check=False,
                     env={"HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "empty-cache")})

    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: data.source.name=go_emotions: cannot load it"), \
        result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


def test_wrong_column_and_split_list_what_the_dataset_has(tmp_path):
    rows = {"train": (["a", "b"], [["joy"], ["fear"]]), "val": (["c"], [["joy"]])}
    directory = saved(tmp_path, rows, False, {"train": "train", "val": "validation"})

    with pytest.raises(DataError) as column:
        HuggingFaceSource(str(directory), text_column="text", label_column="tags").load()
    with pytest.raises(DataError) as split:
        HuggingFaceSource(str(directory), splits={"val": "dev"}, text_column="sentence", label_column="tags").load()

    assert str(column.value) == (f"{directory}/train: no column 'text' (its columns: ['id', 'sentence', 'tags']). "
                                 "Set data.source.text_column / data.source.label_column.")
    assert str(split.value).startswith(f"data.source.splits.val=dev: {directory} has no split 'dev'; its splits are "
                                       "['train', 'validation']. Set data.source.splits.val to one of them")


def test_bad_rows_are_listed_by_split_and_row(tmp_path):
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [{"text": "ok", "label": "joy"}, {"text": " ", "label": "joy"},
                                                {"text": "a\x00b", "label": "joy"}]))

    with pytest.raises(DataError) as info:
        HuggingFaceSource(str(tmp_path / "files"), cache_dir=str(tmp_path / "cache")).load()

    assert f"{tmp_path}/files/train:1: empty text" in str(info.value)
    assert f"{tmp_path}/files/train:2: the text contains NUL characters" in str(info.value)


def test_no_such_local_directory(tmp_path):
    with pytest.raises(DataError, match=r"data.source.name=\./nowhere: no such directory"):
        HuggingFaceSource("./nowhere").load()


def test_without_datasets_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[hf\]"'):
        HuggingFaceSource("go_emotions").load()
