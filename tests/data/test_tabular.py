"""TabularSource: formats, label forms, vocabulary and task inference, and every bad-input message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from src.data.sources.sample import SAMPLE_DIR, SampleSource
from src.data.sources.tabular import TabularSource
from src.errors import DataError


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(path: Path, rows: list[object]) -> str:
    """One line per row: a dict/list is dumped as JSON, a str is written verbatim (for broken lines)."""
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def load_error(**kwargs: object) -> str:
    with pytest.raises(DataError) as info:
        TabularSource(**kwargs).load()  # type: ignore[arg-type]
    return str(info.value)


def test_jsonl_label_names_in_lists(tmp_path: Path) -> None:
    train = jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "one", "labels": ["joy"]},
            {"text": "two", "labels": ["anger", "joy"]},
            {"text": "x", "labels": []},
        ],
    )
    data = TabularSource(train).load()
    assert data.label_names == ["anger", "joy"]
    assert data.task == "multilabel"
    assert data.splits["train"].texts == ["one", "two", "x"]
    assert data.splits["train"].labels == [[1], [0, 1], []]
    assert data.splits["train"].origin == [f"{train}:1", f"{train}:2", f"{train}:3"]


def test_jsonl_integer_ids_name_the_labels_that_occur_and_warn_of_the_gap(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": 3}, {"text": "b", "labels": 0},
                                             {"text": "c", "labels": "03"}])
    data = TabularSource(train).load()
    assert data.label_names == ["0", "3"]  # not 0..3: ids 1 and 2 have no rows
    assert data.task == "multiclass"
    assert data.splits["train"].labels == [[1], [0], [1]]
    assert any("ids 1, 2 (between 0 and 3) occur in no train row" in w for w in data.facts["warnings"])


def test_jsonl_string_is_split_on_the_delimiter(tmp_path: Path) -> None:
    train = jsonl(
        tmp_path / "train.jsonl", [{"text": "a", "labels": "joy, fear"}, {"text": "b", "labels": "fear"}]
    )
    data = TabularSource(train).load()
    assert data.label_names == ["fear", "joy"]
    assert data.splits["train"].labels == [[0, 1], [0]]
    assert data.task == "multilabel"


def test_one_label_lists_still_mean_multilabel(tmp_path: Path) -> None:
    train = jsonl(
        tmp_path / "train.jsonl", [{"text": "a", "labels": ["joy"]}, {"text": "b", "labels": ["fear"]}]
    )
    assert TabularSource(train).load().task == "multilabel"


def test_single_string_labels_mean_multiclass(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": "joy"}, {"text": "b", "labels": "fear"}])
    assert TabularSource(train).load().task == "multiclass"


def test_csv_delimited_json_list_and_empty_cells(tmp_path: Path) -> None:
    train = write(
        tmp_path / "train.csv",
        'id,text,labels\n1,"hi, there","joy,fear"\n2,plain,"[""sad"", ""joy""]"\n3,none,\n4,single, joy \n',
    )
    data = TabularSource(train).load()
    assert data.label_names == ["fear", "joy", "sad"]
    assert data.splits["train"].texts == ["hi, there", "plain", "none", "single"]
    assert data.splits["train"].labels == [[0, 1], [1, 2], [], [1]]
    assert data.splits["train"].origin[2] == f"{train}:4"
    assert data.task == "multilabel"


def test_tsv_with_other_columns_and_delimiter(tmp_path: Path) -> None:
    train = write(tmp_path / "train.tsv", "tags\tsentence\nb|a\tfirst\nc\tsecond\n")
    data = TabularSource(train, text_column="sentence", label_column="tags", label_delimiter="|").load()
    assert data.label_names == ["a", "b", "c"]
    assert data.splits["train"].texts == ["first", "second"]
    assert data.splits["train"].labels == [[0, 1], [2]]


def test_format_can_be_forced_over_the_extension(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "text\tlabels\nhello\tx\n")
    assert TabularSource(train, format="tsv").load().splits["train"].texts == ["hello"]


def test_given_labels_keep_their_order_and_ids_index_them(tmp_path: Path) -> None:
    train = jsonl(
        tmp_path / "train.jsonl", [{"text": "a", "labels": ["zeta", 1]}, {"text": "b", "labels": "alpha"}]
    )
    data = TabularSource(train, labels=["zeta", "alpha", "mid"]).load()
    assert data.label_names == ["zeta", "alpha", "mid"]
    assert data.splits["train"].labels == [[0, 1], [1]]


def test_splits_share_the_train_vocabulary(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": "b"}, {"text": "b", "labels": "a"}])
    val = jsonl(tmp_path / "val.jsonl", [{"text": "c", "labels": "b"}])
    test = write(tmp_path / "test.csv", "text,labels\nd,a\n")
    data = TabularSource(train, val, test).load()
    assert list(data.splits) == ["train", "val", "test"]
    assert data.splits["val"].labels == [[1]]
    assert data.splits["test"].labels == [[0]]
    assert data.splits["test"].origin == [f"{test}:2"]


def test_forced_multilabel(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": "x"}, {"text": "b", "labels": "y"}])
    assert TabularSource(train, task="multilabel").load().task == "multilabel"


def test_forced_multiclass_with_two_labels_names_the_row(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": "x"}, {"text": "b", "labels": "x,y"}])
    message = load_error(train=train, task="multiclass")
    assert f"{train}:2" in message
    assert "multilabel" in message


def test_relative_paths_are_read_from_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": "x"}])
    monkeypatch.chdir(tmp_path)
    assert TabularSource("train.jsonl").load().splits["train"].origin == ["train.jsonl:1"]


def test_unknown_label_in_val_names_row_label_vocabulary_and_fix(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": "joy"}, {"text": "b", "labels": "fear"}])
    val = jsonl(tmp_path / "val.jsonl", [{"text": "c", "labels": "joy"}, {"text": "d", "labels": "rage"}])
    message = load_error(train=train, val=val)
    assert f"{val}:2" in message
    assert "'rage'" in message
    assert "['fear', 'joy']" in message
    assert "data.source.labels=[...]" in message


def test_id_outside_given_labels_is_unknown(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": 0}, {"text": "b", "labels": 2}])
    message = load_error(train=train, labels=["x", "y"])
    assert f"{train}:2" in message
    assert "'2'" in message


def test_name_in_an_integer_id_dataset_is_unknown(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": 0}, {"text": "b", "labels": 1}])
    test = jsonl(tmp_path / "test.jsonl", [{"text": "c", "labels": "joy"}])
    message = load_error(train=train, test=test)
    assert f"{test}:1" in message
    assert "'joy'" in message


def test_missing_file_names_the_config_key(tmp_path: Path) -> None:
    train = jsonl(tmp_path / "train.jsonl", [{"text": "a", "labels": "x"}])
    message = load_error(train=train, val=str(tmp_path / "nope.jsonl"))
    assert "nope.jsonl" in message
    assert "data.source.val" in message


def test_missing_csv_column_lists_the_columns_found(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "sentence,labels\nhi,x\n")
    message = load_error(train=train)
    assert "train.csv" in message
    assert "'text'" in message
    assert "['sentence', 'labels']" in message
    assert "data.source.text_column" in message


def test_empty_csv_is_reported(tmp_path: Path) -> None:
    message = load_error(train=write(tmp_path / "train.csv", ""))
    assert "train.csv: the file is empty (0 bytes)" in message
    assert "data.source.train" in message


def test_all_bad_csv_rows_are_reported_together(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,labels\nok,x\ntoo,many,fields\n   ,x\nok,y\nshort\n")
    message = load_error(train=train)
    for line in (3, 4, 6):
        assert f"{train}:{line}:" in message
    assert f"{train}:2:" not in message
    assert f"{train}:5:" not in message
    assert "3 bad row(s)" in message
    assert "expected 2 fields" in message
    assert "empty text" in message


def test_all_bad_jsonl_rows_are_reported_together(tmp_path: Path) -> None:
    train = jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "fine", "labels": "x"},
            "{not json",
            "[1, 2]",
            {"text": "no labels key"},
            {"text": 7, "labels": "x"},
            {"text": " \t", "labels": "x"},
            {"text": "float label", "labels": 1.5},
        ],
    )
    message = load_error(train=train)
    for line in range(2, 8):
        assert f"{train}:{line}:" in message
    assert f"{train}:1:" not in message
    assert "not valid JSON" in message
    assert "expected a JSON object, got list" in message
    assert "missing key 'labels'" in message
    assert "text is int" in message
    assert "empty text" in message
    assert "1.5" in message


def test_blank_jsonl_lines_are_skipped_and_lines_stay_physical(tmp_path: Path) -> None:
    train = write(
        tmp_path / "train.jsonl", '\n{"text": "a", "labels": "x"}\n\n{"text": "b", "labels": "x"}\n\n'
    )
    assert TabularSource(train).load().splits["train"].origin == [f"{train}:2", f"{train}:4"]


def test_blank_csv_lines_are_skipped(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,labels\na,x\n\nb,y\n\n")
    assert TabularSource(train).load().splits["train"].origin == [f"{train}:2", f"{train}:4"]


def test_more_than_twenty_problems_are_summarised(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,labels\n" + " ,x\n" * 25)
    message = load_error(train=train)
    assert f"{train}:21:" in message
    assert f"{train}:22:" not in message
    assert "... and 5 more" in message
    assert "25 bad row(s)" in message


def test_unknown_extension_asks_for_the_format(tmp_path: Path) -> None:
    message = load_error(train=write(tmp_path / "train.txt", "text,labels\na,b\n"))
    assert "train.txt" in message
    assert "data.source.format" in message


def test_no_labels_anywhere_asks_for_the_vocabulary(tmp_path: Path) -> None:
    message = load_error(train=write(tmp_path / "train.csv", "text,labels\na,\n"))
    assert "train.csv" in message
    assert "data.source.labels" in message


def test_file_without_records_is_an_error(tmp_path: Path) -> None:
    message = load_error(train=write(tmp_path / "train.csv", "text,labels\n"))
    assert "train.csv" in message
    assert "no records" in message


@pytest.mark.parametrize(("option", "value"), [("format", "xml"), ("task", "regression")])
def test_bad_options_are_rejected(tmp_path: Path, option: str, value: str) -> None:
    with pytest.raises(DataError, match=f"data.source.{option}"):
        TabularSource("train.csv", **{option: value})


@pytest.mark.skipif(
    not all((SAMPLE_DIR / f"{split}.jsonl").is_file() for split in ("train", "val", "test")),
    reason=f"the sample files are not in {SAMPLE_DIR} yet",
)
def test_sample_source_loads() -> None:
    data = SampleSource().load()
    assert data.label_names == ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    assert data.task == "multilabel"
    assert list(data.splits) == ["train", "val", "test"]
    assert all(len(split) > 0 for split in data.splits.values())
