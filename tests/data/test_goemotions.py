"""GoEmotionsSource: local TSV reading and checks, taxonomies, and the hub fallback's errors."""

from __future__ import annotations

import json
import logging
import sys
import types
from pathlib import Path

import pytest

from src.data.sources.goemotions import EKMAN, LABELS, SENTIMENT, GoEmotionsSource
from src.errors import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared/data/goemotions"


def goemotions_dir(tmp_path: Path, train: str, dev: str | None = None, test: str | None = None) -> str:
    for name, text in (("train.tsv", train), ("dev.tsv", dev), ("test.tsv", test)):
        if text is not None:
            (tmp_path / name).write_text(text, encoding="utf-8")
    return str(tmp_path)


def test_original_taxonomy(tmp_path: Path) -> None:
    directory = goemotions_dir(
        tmp_path, 'He said "hi"\t2,0\tc1\nfine\t27\tc2\n', dev="ok\t17\tc3\n", test="t\t3\tc4\n"
    )
    data = GoEmotionsSource(directory).load()
    assert data.task == "multilabel"
    assert data.label_names == list(LABELS)
    assert data.num_labels == 28
    assert data.label_names[27] == "neutral"
    assert data.splits["train"].texts == ['He said "hi"', "fine"]
    assert data.splits["train"].labels == [[0, 2], [27]]
    assert data.splits["train"].origin == [f"{tmp_path / 'train.tsv'}:1", f"{tmp_path / 'train.tsv'}:2"]
    assert data.splits["val"].labels == [[17]]
    assert data.splits["test"].labels == [[3]]


def test_ekman_taxonomy(tmp_path: Path) -> None:
    # admiration+anger -> joy+anger; neutral; fear+nervousness -> fear once; disgust+surprise;
    # curiosity -> surprise
    directory = goemotions_dir(tmp_path, "a\t0,2\tc\nb\t27\tc\nc\t14,19\tc\nd\t11,26\tc\ne\t7\tc\n")
    data = GoEmotionsSource(directory, taxonomy="ekman").load()
    assert data.label_names == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    assert data.splits["train"].labels == [[0, 3], [6], [2], [1, 5], [5]]


def test_sentiment_taxonomy(tmp_path: Path) -> None:
    # admiration+anger -> positive+negative; confusion+neutral -> ambiguous+neutral; joy+love -> positive once
    directory = goemotions_dir(tmp_path, "a\t0,2\tc\nb\t6,27\tc\nc\t17,18\tc\n")
    data = GoEmotionsSource(directory, taxonomy="sentiment").load()
    assert data.label_names == ["positive", "negative", "ambiguous", "neutral"]
    assert data.splits["train"].labels == [[0, 1], [2, 3], [0]]


@pytest.mark.parametrize("mapping", [EKMAN, SENTIMENT], ids=["ekman", "sentiment"])
def test_mappings_cover_every_label_once(mapping: dict[str, list[str]]) -> None:
    members = sorted(label for group in mapping.values() for label in group)
    assert members == sorted(set(LABELS) - {"neutral"})


def test_missing_dev_and_test_are_skipped_with_one_warning_each(tmp_path: Path, caplog) -> None:
    directory = goemotions_dir(tmp_path, "a\t1\tc\n")
    with caplog.at_level(logging.WARNING):
        data = GoEmotionsSource(directory).load()
    assert list(data.splits) == ["train"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "no dev.tsv" in warnings[0] and "val split is skipped" in warnings[0]
    assert "no test.tsv" in warnings[1] and "test split is skipped" in warnings[1]


def test_present_dev_gives_no_warning_for_it(tmp_path: Path, caplog) -> None:
    directory = goemotions_dir(tmp_path, "a\t1\tc\n", dev="b\t2\tc\n")
    with caplog.at_level(logging.WARNING):
        GoEmotionsSource(directory).load()
    assert [r.getMessage() for r in caplog.records] == [
        f"GoEmotions: no test.tsv in {directory}; the test split is skipped"
    ]


def test_missing_directory_and_missing_train_say_how_to_fix(tmp_path: Path) -> None:
    for directory in (tmp_path / "absent", tmp_path):
        with pytest.raises(DataError) as info:
            GoEmotionsSource(str(directory)).load()
        assert str(directory) in str(info.value)
        assert "data.source.data_dir=" in str(info.value)
        assert "train.tsv" in str(info.value)


def test_all_bad_rows_are_reported(tmp_path: Path) -> None:
    directory = goemotions_dir(tmp_path, "good\t1\tc\nno id field\n  \t3\tc\nx\t28\tc\ny\t1,z\tc\nz\t\tc\n")
    with pytest.raises(DataError) as info:
        GoEmotionsSource(directory).load()
    message = str(info.value)
    train = tmp_path / "train.tsv"
    for line in (2, 3, 4, 5, 6):
        assert f"{train}:{line}:" in message
    assert f"{train}:1:" not in message
    assert "expected 3 tab-separated fields" in message
    assert "empty text" in message
    assert "['28']" in message
    assert "['z']" in message


def test_labels_txt_must_match(tmp_path: Path) -> None:
    directory = goemotions_dir(tmp_path, "a\t1\tc\n")
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    assert GoEmotionsSource(directory).load().num_labels == 28
    (tmp_path / "labels.txt").write_text("\n".join(reversed(LABELS)) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="labels.txt"):
        GoEmotionsSource(directory).load()


def test_unknown_taxonomy_lists_the_valid_ones() -> None:
    with pytest.raises(DataError, match="original, ekman, sentiment"):
        GoEmotionsSource("anywhere", taxonomy="plutchik")


def test_without_datasets_the_error_names_data_dir_and_the_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataError) as info:
        GoEmotionsSource().load()
    assert "data.source.data_dir=<directory with train.tsv and dev.tsv>" in str(info.value)
    assert "pip install datasets" in str(info.value)


def test_failed_download_is_wrapped(monkeypatch) -> None:
    def offline(*args: object) -> None:
        raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=offline))
    with pytest.raises(DataError) as info:
        GoEmotionsSource().load()
    assert "data.source.data_dir=<directory with train.tsv and dev.tsv>" in str(info.value)
    assert "no route to host" in str(info.value)


def test_hub_splits_are_renamed(monkeypatch) -> None:
    hub = {
        "train": {"text": ["a", "b"], "labels": [[2, 0], [27]]},
        "validation": {"text": ["c"], "labels": [[5]]},
        "test": {"text": ["d"], "labels": [[6]]},
    }
    requested = []

    def load_dataset(hub_id: str, config: str) -> dict:
        requested.append((hub_id, config))
        return hub

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = GoEmotionsSource(taxonomy="ekman").load()
    assert requested == [("google-research-datasets/go_emotions", "simplified")]
    assert list(data.splits) == ["train", "val", "test"]
    assert data.splits["train"].labels == [[0, 3], [6]]
    assert data.splits["val"].labels == [[3]]
    assert data.splits["test"].origin == ["google-research-datasets/go_emotions/test:0"]


def test_offline_fetch_asks_for_a_local_copy(monkeypatch, tmp_path: Path) -> None:
    """The real environment: `datasets` is either missing or cannot reach the hub; both name data.source.data_dir."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # no cached copy to fall back on
    with pytest.raises(DataError) as info:
        GoEmotionsSource().load()
    assert "data.source.data_dir=" in str(info.value)


@pytest.mark.skipif(not (SHARED / "train.tsv").is_file(), reason=f"no local GoEmotions copy at {SHARED}")
def test_real_goemotions_copy() -> None:
    data = GoEmotionsSource(str(SHARED)).load()
    assert len(data.splits["train"]) == 43_410
    assert len(data.splits["val"]) == 5_426
    assert data.num_labels == 28
    assert data.label_counts("train").min() > 0


@pytest.mark.parametrize(("mapping", "name"), [(EKMAN, "ekman"), (SENTIMENT, "sentiment")])
def test_embedded_mappings_match_the_papers_files(mapping: dict[str, list[str]], name: str) -> None:
    path = SHARED / f"{name}_mapping.json"
    if not path.is_file():
        pytest.skip(f"no {path}")
    original = json.loads(path.read_text(encoding="utf-8"))
    assert list(mapping) == list(original)
    assert mapping == original
