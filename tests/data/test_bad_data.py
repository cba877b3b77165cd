"""The bad-data corpus: bad files, bad rows and label-format traps, each through the DataModule as the train command
builds it, asserting one ``error:`` message naming the file/row/key and the fix (no traceback), or the expected
warning; the data-check counts against pandas; encodings with real GB18030 and Latin-1 files; a few cases through
the real CLI."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from hydra.utils import instantiate

from src.errors import user_message
from tests.helpers import compose_train, run_cli, runs_in

CHINESE = ["今天天气很好，我们去公园散步吧。", "这部电影真让人生气！", "我一个人在黑暗里很害怕。", "朋友们聚会真开心。",
           "他对服务员很无礼，太过分了。", "夜里的声音让我发抖。"]
FRENCH = ["Café crème à l'hôtel, quelle journée", "Très énervé par ce garçon mal élevé", "J'ai peur du noir, là-bas",
          "Quelle fête magnifique à la plage", "Je suis fâché et déçu", "Señor, ¿qué pasó? Está muy enfadado"]
LABELS = ["joy", "anger", "fear", "joy", "anger", "fear"]


def csv_text(texts: list[str], labels: list[str]) -> str:
    return "text,labels\n" + "".join(f'"{t}","{label}"\n' for t, label in zip(texts, labels))


def rows(n: int, labels: list[str], prefix: str = "row") -> list[tuple[str, str]]:
    """``n`` distinct texts cycling through ``labels``."""
    return [(f"{prefix} {i} says something", labels[i % len(labels)]) for i in range(n)]


def write_csv(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text(csv_text([t for t, _ in records], [label for _, label in records]), encoding="utf-8")
    return path


def load(tmp_path: Path, overrides: list[str], setup: bool = False):
    """Build and load the DataModule as ``python -m src.train`` does; returns (datamodule or None, ``error:``
    message or None)."""
    cfg = compose_train(tmp_path, ["data.cache_dir=null", *overrides])
    try:
        datamodule = instantiate(cfg.data)
        datamodule.load()
        if setup:
            datamodule.setup()
        return datamodule, None
    except Exception as error:  # noqa: BLE001  (a bug must fail the test below, not vanish)
        message = user_message(error)
        assert message is not None, f"a bug, not a user error: {error!r}"
        return None, message


def error_of(tmp_path: Path, overrides: list[str]) -> str:
    _, message = load(tmp_path, overrides)
    assert message is not None, "expected an error"
    assert message.startswith("error: ") and message.count("error:") == 1, message
    assert "Traceback" not in message
    return message


def source(split: str, path: Path | str) -> str:
    return f"data.source.{split}={path}"


# ---------------------------------------------------------------- errors: (files, overrides, expected parts)


def case_empty_file(d: Path):
    (d / "train.csv").write_bytes(b"")
    return [source("train", d / "train.csv")], ["train.csv: the file is empty (0 bytes)", "data.source.train"]


def case_blank_first_line(d: Path):
    (d / "train.csv").write_text("\ntext,labels\na,joy\n")
    return [source("train", d / "train.csv")], ["train.csv: the first line is blank", "header row"]


def case_empty_label_cell_in_single_label_csv(d: Path):
    records = rows(12, ["joy", "anger"])
    records[3] = (records[3][0], "")
    write_csv(d / "train.csv", records)
    return [source("train", d / "train.csv")], [
        "cannot tell single-label from multi-label", "1 row(s) have none", "train.csv:5", "data.source.task=multilabel"]


def case_single_class_train(d: Path):
    write_csv(d / "train.csv", rows(12, ["joy"]))
    write_csv(d / "val.csv", rows(4, ["joy"], "val"))
    return [source("train", d / "train.csv"), source("val", d / "val.csv")], [
        "only the class 'joy' (12 rows)", "at least two classes"]


def case_multilabel_label_on_every_row(d: Path):
    write_csv(d / "train.csv", rows(12, ["joy"]))
    return [source("train", d / "train.csv"), "data.source.task=multilabel"], [
        "no label varies in the train split", "'joy': 12", "Add rows with and without each label"]


def case_latin1_read_as_utf8(d: Path):
    (d / "train.csv").write_bytes(csv_text(FRENCH, LABELS).encode("latin-1"))
    offset = csv_text(FRENCH, LABELS).encode("latin-1").index("é".encode("latin-1"))
    return [source("train", d / "train.csv"), "data.encoding=utf-8"], [
        "train.csv: not utf-8 text", f"at byte offset {offset}, line 2", "data.encoding=<the file's encoding>"]


def case_gb18030_read_as_utf8(d: Path):
    (d / "train.csv").write_bytes(csv_text(CHINESE, LABELS).encode("gb18030"))
    return [source("train", d / "train.csv"), "data.encoding=utf8"], [
        "train.csv: not utf-8 text", "byte offset 13, line 2", "data.encoding=auto"]


def case_unknown_encoding_name(d: Path):
    write_csv(d / "train.csv", rows(6, ["joy", "anger"]))
    return [source("train", d / "train.csv"), "data.encoding=klingon"], [
        "data.encoding=klingon: unknown text encoding", "gb18030"]


def case_nul_bytes_in_text(d: Path):
    (d / "train.csv").write_text("text,labels\nfine,joy\nbro\x00ken,anger\nalso fine,anger\n")
    return [source("train", d / "train.csv")], ["train.csv:3: the text contains NUL characters", "1 bad row(s)"]


def case_broken_json_array(d: Path):
    (d / "train.json").write_text('[\n {"text": "a", "labels": "joy"},\n {"text": "b" "labels": "anger"}\n]\n')
    return ["data=jsonl", source("train", d / "train.json")], [
        "train.json: starts like a JSON array but is not valid JSON", "line 3", "JSON Lines"]


def case_json_array_of_non_objects(d: Path):
    (d / "train.json").write_text('[\n {"text": "a", "labels": "joy"},\n ["b", "anger"]\n]\n')
    return ["data=jsonl", source("train", d / "train.json")], ["train.json:3: expected a JSON object, got list"]


def case_jsonl_bad_line(d: Path):
    (d / "train.jsonl").write_text('{"text": "a", "labels": "joy"}\n{"text": "b", labels: 1}\n')
    return ["data=jsonl", source("train", d / "train.jsonl")], ["train.jsonl:2: not valid JSON", "Fix or remove"]


def case_leakage_refused(d: Path):
    write_csv(d / "train.csv", rows(10, ["joy", "anger"]))
    return [source("train", d / "train.csv"), source("test", d / "train.csv"), "data.on_leakage=error",
            "data.val_fraction=null"], [
        "10 of 10 test rows repeat a train text", "train.csv:2", "data.on_leakage=warn"]


def case_bad_leakage_policy(d: Path):
    write_csv(d / "train.csv", rows(10, ["joy", "anger"]))
    return [source("train", d / "train.csv"), "data.on_leakage=maybe"], ["data.on_leakage=maybe", "warn, error"]


def case_unknown_label_in_val(d: Path):
    write_csv(d / "train.csv", rows(10, ["joy", "anger"]))
    write_csv(d / "val.csv", [("v1", "joy"), ("v2", "rage")])
    return [source("train", d / "train.csv"), source("val", d / "val.csv")], [
        "val.csv:3: unknown label 'rage'", "data.source.labels=[...]"]


def case_missing_column(d: Path):
    (d / "train.csv").write_text("sentence,labels\nhi,joy\n")
    return [source("train", d / "train.csv")], ["no column 'text'", "data.source.text_column"]


def case_missing_file(d: Path):
    return [source("train", d / "nope.csv")], ["nope.csv", "data.source.train=<path to the file>"]


ERRORS = [case_empty_file, case_blank_first_line, case_empty_label_cell_in_single_label_csv, case_single_class_train,
          case_multilabel_label_on_every_row, case_latin1_read_as_utf8, case_gb18030_read_as_utf8,
          case_unknown_encoding_name, case_nul_bytes_in_text, case_broken_json_array, case_json_array_of_non_objects,
          case_jsonl_bad_line, case_leakage_refused, case_bad_leakage_policy, case_unknown_label_in_val,
          case_missing_column, case_missing_file]


@pytest.mark.parametrize("case", ERRORS, ids=[c.__name__.removeprefix("case_") for c in ERRORS])
def test_bad_data_gets_one_error_naming_where_and_the_fix(tmp_path, case):
    overrides, expected = case(tmp_path)
    message = error_of(tmp_path, ["data=csv", *overrides])
    for part in expected:
        assert part in message, message


@pytest.mark.parametrize(("override", "expected"), [
    ("data.encoding=klingon", "data.encoding=klingon: must be auto or a Python codec name"),
    ("data.on_leakage=maybe", "data.on_leakage=maybe: must be one of warn, error"),
])
def test_bad_data_options_stop_at_the_boundary(tmp_path, override, expected):
    """The schema refuses them before anything is read (the DataModule's own check covers the Python API)."""
    from src.errors import ConfigError
    from src.schema import validate

    cfg = compose_train(tmp_path, ["data=csv", "data.source.train=x.csv", override])
    with pytest.raises(ConfigError) as info:
        validate(cfg, "train")
    assert str(info.value).startswith(expected), str(info.value)


# ---------------------------------------------------------------- warnings: the data loads, the log says why


def warn_delimiter_in_label(d: Path):
    write_csv(d / "train.csv", [("a", "joy;surprise"), ("b", "joy"), ("c", "anger"), ("d", "joy;surprise")])
    return [source("train", d / "train.csv"), "data.val_fraction=null"], [
        "label 'joy;surprise' contains ';' (2 train row(s): ", "train.csv:2, ", "train.csv:5)",
        "data.source.label_delimiter=';'"]


def warn_integer_id_gap(d: Path):
    write_csv(d / "train.csv", [(f"t{i}", "0" if i % 2 else "5") for i in range(8)])
    return [source("train", d / "train.csv"), "data.val_fraction=null"], [
        "integer label ids 1, 2, 3, 4 (between 0 and 5) occur in no train row", "(0, 5)"]


def warn_label_without_train_rows(d: Path):
    write_csv(d / "train.csv", rows(10, ["joy", "anger"]))
    return [source("train", d / "train.csv"), "data.source.labels=[joy,anger,fear]", "data.val_fraction=null"], [
        "1 label(s) have no train rows", ": fear"]


def warn_label_missing_from_val(d: Path):
    write_csv(d / "train.csv", rows(12, ["joy", "anger", "fear"]))
    write_csv(d / "val.csv", rows(4, ["joy", "anger"], "val"))
    return [source("train", d / "train.csv"), source("val", d / "val.csv")], [
        "1 label(s) have train rows but none in val", ": fear"]


def warn_single_class_val(d: Path):
    write_csv(d / "train.csv", rows(12, ["joy", "anger"]))
    write_csv(d / "val.csv", rows(4, ["anger"], "val"))
    return [source("train", d / "train.csv"), source("val", d / "val.csv")], [
        "val has rows of a single class ('anger')", "label(s) have train rows but none in val"]


def warn_test_is_train(d: Path):
    write_csv(d / "train.csv", rows(10, ["joy", "anger"]))
    write_csv(d / "val.csv", rows(4, ["joy", "anger"], "val"))
    return [source("train", d / "train.csv"), source("val", d / "val.csv"), source("test", d / "train.csv")], [
        "10 of 10 test rows repeat a train text (10 exactly, 0 up to case and whitespace)"]


def warn_near_duplicates(d: Path):
    write_csv(d / "train.csv", rows(10, ["joy", "anger"]))
    write_csv(d / "val.csv", [("ROW 0   says something", "joy"), ("row 1 says something", "anger"), ("new", "joy")])
    return [source("train", d / "train.csv"), source("val", d / "val.csv")], [
        "2 of 3 val rows repeat a train text (1 exactly, 1 up to case and whitespace)", "val.csv:2, ", "val.csv:3"]


def warn_label_on_every_row(d: Path):
    (d / "train.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "labels": ["base", "joy"] if i % 2 else
                                                       ["base"]}) + "\n" for i in range(10)))
    return ["data=jsonl", source("train", d / "train.jsonl"), "data.val_fraction=null"], [
        "label(s) on every train row, so they teach nothing: base"]


WARNINGS = [warn_delimiter_in_label, warn_integer_id_gap, warn_label_without_train_rows, warn_label_missing_from_val,
            warn_single_class_val, warn_test_is_train, warn_near_duplicates, warn_label_on_every_row]


@pytest.mark.parametrize("case", WARNINGS, ids=[c.__name__.removeprefix("warn_") for c in WARNINGS])
def test_doubtful_data_loads_with_a_warning_naming_it(tmp_path, caplog, case):
    overrides, expected = case(tmp_path)
    with caplog.at_level(logging.WARNING):
        datamodule, message = load(tmp_path, ["data=csv", *overrides])
    assert message is None, message
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for part in expected:
        assert part in warnings, warnings
    assert datamodule.checks.warnings and all(w in warnings for w in datamodule.checks.warnings)


def test_truncation_is_reported_and_a_large_share_warns(tmp_path, caplog):
    from src.pretrained import load_tokenizer

    long = [" ".join(["word"] * n) for n in (3, 30, 60, 200)]
    write_csv(tmp_path / "train.csv", list(zip(long * 3, ["joy", "anger"] * 6)))
    with caplog.at_level(logging.WARNING):
        datamodule, message = load(tmp_path, ["data=csv", source("train", tmp_path / "train.csv"),
                                              "data.val_fraction=null", "data.max_length=16"], setup=True)
    assert message is None, message
    tokenizer = load_tokenizer(datamodule.tokenizer_name)
    lengths = [len(tokenizer(t)["input_ids"]) for t in long * 3]  # untruncated, special tokens included
    over = sorted(n - 16 for n in lengths if n > 16)
    found = datamodule.checks.truncation["train"]
    assert found["truncated"] == len(over) == 9 and found["share"] == 9 / 12
    assert found["overflow_max"] == over[-1] and found["overflow_median"] == over[len(over) // 2]
    assert found["longest"] == max(lengths)
    assert "data.max_length=16 cuts 9 of 12 train texts (75%" in caplog.text
    assert all(len(ids) <= 16 for ids in datamodule.dataset("train").input_ids)


# ---------------------------------------------------------------- task inference: evidence, named


@pytest.mark.parametrize(
    ("labels", "task", "reason"),
    [
        (["joy", "anger", '"joy,anger"', "fear"], "multilabel", "1 train row(s) have several labels: {f}:4"),
        (["joy", "anger", "fear", "joy"], "multiclass", "every train row has exactly one label (4 rows)"),
        (['"[""joy""]"', '"[""anger""]"', '"[]"', '"[""fear""]"'], "multilabel",
         "labels written as JSON lists in 4 train row(s): {f}:2, {f}:3, {f}:4, {f}:5"),
    ],
    ids=["several-labels", "one-label-each", "json-lists"],
)
def test_task_is_decided_by_named_evidence(tmp_path, labels, task, reason):
    path = tmp_path / "train.csv"
    path.write_text("text,labels\n" + "".join(f"t{i},{label}\n" for i, label in enumerate(labels)))
    datamodule, message = load(tmp_path, ["data=csv", source("train", path), "data.val_fraction=null"])
    assert message is None, message
    assert datamodule.checks.task == task
    assert datamodule.checks.task_reason == reason.format(f=path)


# ---------------------------------------------------------------- encodings: real files in other encodings


@pytest.mark.parametrize("encoding", ["gb18030", "latin-1"])
@pytest.mark.parametrize("given", ["auto", "explicit"])
def test_files_in_other_encodings_read_exactly(tmp_path, caplog, encoding, given):
    texts = CHINESE if encoding == "gb18030" else FRENCH
    raw = csv_text(texts, LABELS).encode(encoding)
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")  # the test means something only if UTF-8 would not read it
    (tmp_path / "train.csv").write_bytes(raw)
    overrides = ["data=csv", source("train", tmp_path / "train.csv"), "data.val_fraction=null"]
    with caplog.at_level(logging.INFO):
        datamodule, message = load(tmp_path, [*overrides, *([f"data.encoding={encoding}"] if given != "auto" else [])])
    assert message is None, message
    assert datamodule.data.splits["train"].texts == texts
    used = datamodule.checks.encoding["files"]["train"]["encoding"]
    if given == "auto":
        assert used == {"gb18030": "gb18030", "latin-1": "cp1252"}[encoding]  # cp1252 reads Latin-1's letters alike
        assert f"text encoding {used} (detected" in caplog.text
    else:
        assert used == {"gb18030": "gb18030", "latin-1": "iso8859-1"}[encoding]


def test_utf8_with_bom_and_json_array_are_read(tmp_path, caplog):
    records = [{"text": t, "labels": label} for t, label in zip(CHINESE, LABELS)]
    (tmp_path / "train.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(records, ensure_ascii=False, indent=1).encode())
    with caplog.at_level(logging.INFO):
        datamodule, message = load(tmp_path, ["data=jsonl", source("train", tmp_path / "train.json"),
                                              "data.val_fraction=null"])
    assert message is None, message
    assert "this is a JSON array, not JSON Lines: read its 6 elements as records" in caplog.text
    train = datamodule.data.splits["train"]
    assert train.texts == CHINESE
    # each element's origin is the line it starts on: "[" is line 1, then 4 lines per element (indent=1)
    assert train.origin == [f"{tmp_path / 'train.json'}:{2 + 4 * i}" for i in range(6)]


def test_predict_input_in_another_encoding(tmp_path):
    from src.errors import DataError
    from src.predict import iter_texts

    path = tmp_path / "in.txt"
    path.write_bytes("\n".join(CHINESE).encode("gb18030") + b"\n")
    assert list(iter_texts(path)) == CHINESE
    assert list(iter_texts(path, encoding="gb18030")) == CHINESE
    with pytest.raises(DataError) as info:
        list(iter_texts(path, encoding="utf-8"))
    assert "in.txt: not utf-8 text" in str(info.value) and "line 1" in str(info.value)
    assert "Set encoding=<the file's encoding>" in str(info.value)


# ---------------------------------------------------------------- the summary's counts against pandas


def test_data_check_counts_match_an_independent_count(tmp_path):
    train = [("Sunny party", "joy"), ("rude and unfair", "anger"), ("dark, alone", "fear,joy"), ("great", ""),
             ("so scary", "fear"), ("furious", "anger,fear"), ("wonderful day", "joy"), ("yelling", "anger")]
    val = [("sunny  PARTY", "joy"), ("rude and unfair", "anger"), ("fresh text", "fear")]
    test = [("great", ""), ("GREAT", "joy"), ("new one", "anger,joy"), ("wonderful day", "joy")]
    for name, records in (("train", train), ("val", val), ("test", test)):
        write_csv(tmp_path / f"{name}.csv", records)
    datamodule, message = load(tmp_path, ["data=csv", *(source(s, tmp_path / f"{s}.csv") for s in ("train", "val",
                                                                                                      "test"))])
    assert message is None, message
    checks = datamodule.checks.to_dict()
    frames = {s: pd.read_csv(tmp_path / f"{s}.csv", keep_default_na=False) for s in ("train", "val", "test")}
    for split, frame in frames.items():
        per_label = Counter(label for cell in frame["labels"] for label in cell.split(",") if label)
        assert {row["label"]: row[split] for row in checks["labels"]} == {
            name: per_label.get(name, 0) for name in ("anger", "fear", "joy")}
        assert checks["rows"][split] == len(frame)
        assert checks["unlabelled"][split] == int((frame["labels"] == "").sum())

    def loose(series):
        return {" ".join(t.split()).casefold() for t in series}

    for pair, found in checks["overlap"].items():
        earlier, later = (frames[s]["text"] for s in pair.split("-"))
        assert found["exact"] == int(later.isin(set(earlier)).sum())
        assert found["normalised"] == sum(" ".join(t.split()).casefold() in loose(earlier) for t in later)
    assert (checks["overlap"]["train-val"]["exact"], checks["overlap"]["train-val"]["normalised"]) == (1, 2)
    assert (checks["overlap"]["train-test"]["exact"], checks["overlap"]["train-test"]["normalised"]) == (2, 3)
    assert checks["task"] == "multilabel" and checks["task_reason"].startswith("2 train row(s) have several labels")
    assert json.loads(json.dumps(checks)) == checks  # plain types: summary.json and MLflow take it as is


def test_single_label_multilabel_data_carves_a_validation_split(tmp_path):
    """One label column: iterative stratification refuses it (sklearn's "Got 'binary'"), so it is stratified
    per value."""
    write_csv(tmp_path / "train.csv", [(f"t{i}", "joy" if i % 2 else "") for i in range(20)])
    datamodule, message = load(tmp_path, ["data=csv", source("train", tmp_path / "train.csv"),
                                          "data.source.task=multilabel", "data.val_fraction=0.2"])
    assert message is None, message
    val = datamodule.data.splits["val"]
    assert len(val) == 4 and sum(bool(ids) for ids in val.labels) == 2


def test_summary_table_repeats_the_first_data_warnings():
    from rich.console import Console

    from src.summary import print_summary

    summary = {"run_name": "r", "task": "multiclass", "label_names": ["a", "b"], "metrics": {},
               "best_checkpoint": None, "mlflow": {"run_id": None}, "output_dir": "out",
               "data_checks": {"warnings": [f"warning [{i}]" for i in range(5)]}}
    console = Console(record=True, width=200)
    print_summary(summary, console)
    text = console.export_text()
    assert [line for line in text.splitlines() if line.startswith("data warning:")] == [
        "data warning: warning [0]", "data warning: warning [1]", "data warning: warning [2]"]
    assert "... and 2 more data warnings" in text


# ---------------------------------------------------------------- through the real CLI


@pytest.mark.parametrize(
    ("files", "args", "expected"),
    [
        ({"train.csv": "text,labels\na,joy\nb,\nc,anger\nd,joy\n"}, [],
         ["cannot tell single-label from multi-label", "train.csv:3", "data.source.task=multilabel"]),
        ({"train.csv": "text,labels\nbon café,joy\nb,anger\n".encode("latin-1")}, ["data.encoding=utf-8"],
         ["train.csv: not utf-8 text", "line 2", "data.encoding="]),
    ],
    ids=["empty-label-cell", "wrong-encoding"],
)
def test_cli_bad_data_gets_one_error_line(tmp_path, tiny_bert, files, args, expected):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run_cli(tmp_path, "data=csv", "data.source.train=train.csv", f"model.name_or_path={tiny_bert}",
                     "logger=none", *args, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for part in expected:
        assert part in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_run_records_the_data_checks(tmp_path, tiny_bert):
    write_csv(tmp_path / "train.csv", rows(24, ["joy", "anger"]))
    write_csv(tmp_path / "val.csv", rows(6, ["joy", "anger"], "val"))
    result = run_cli(tmp_path, "data=csv", "data.source.train=train.csv", "data.source.val=val.csv",
                     "data.source.test=train.csv", "data.max_length=4", f"model.name_or_path={tiny_bert}",
                     "debug=limit", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
                     "hydra.run.dir=run")
    assert "24 of 24 test rows repeat a train text" in result.stderr + result.stdout
    assert "data warning: 24 of 24 test rows repeat a train text" in result.stdout  # under the summary table
    checks = json.loads((tmp_path / "run" / "summary.json").read_text())["data_checks"]
    assert checks["overlap"]["train-test"]["exact"] == 24 and checks["rows"] == {"train": 24, "val": 6, "test": 24}
    assert checks["truncation"]["train"]["truncated"] == 24  # "row N says something" is 6 tokens with specials
    (run,) = runs_in(tmp_path / "outputs" / "mlflow.db")
    assert run.data.metrics["data/overlap_train_test"] == 24 and run.data.params["data_checks.task"] == "multiclass"
    artifacts = Path(run.info.artifact_uri.removeprefix("file://")) / "data_checks.json"
    assert json.loads(artifacts.read_text()) == checks


def test_drop_from_train_removes_exactly_the_leaked_rows(tmp_path, caplog):
    """Planted duplicates (exact and up to case/whitespace) of val and test texts leave train; the rest stays in
    order, and the message names the rows. Reference: a plain set comparison on the raw files."""
    train = rows(12, ["joy", "anger", "fear"])
    val = [(train[1][0].upper(), train[1][1]), ("val only", "fear"), (train[4][0], "anger")]
    test = [("  ".join(train[7][0].split()), train[7][1]), ("test only", "joy")]
    for name, records in (("train", train), ("val", val), ("test", test)):
        write_csv(tmp_path / f"{name}.csv", records)
    with caplog.at_level(logging.WARNING):
        datamodule, message = load(tmp_path, ["data=csv", "data.on_leakage=drop_from_train",
                                              *(source(s, tmp_path / f"{s}.csv") for s in ("train", "val", "test"))])
    assert message is None, message
    held_out = {" ".join(t.split()).casefold() for t, _ in val + test}
    expected = [t for t, _ in train if " ".join(t.split()).casefold() not in held_out]
    assert datamodule.load().splits["train"].texts == expected and len(expected) == 9
    overlap = datamodule.checks.to_dict()["overlap"]
    assert overlap["train-val"]["normalised"] == 0 and overlap["train-test"]["normalised"] == 0
    dropped = [r.getMessage() for r in caplog.records if "drop_from_train" in r.getMessage()]
    assert len(dropped) == 1 and "dropped 3 of 12 train rows" in dropped[0] and "train.csv:3" in dropped[0]
