"""Inference entry points on a tiny trained model: Predictor.from_checkpoint, predict (files, stdin, CLI), export."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from src.errors import ConfigError, DataError
from src.inference import Predictor
from src.metrics.thresholds import Thresholds
from src.predict import predict_file
from src.train import train
from tests.helpers import WORDS, compose_train, quick, run_cli, write_dataset

TEXTS = [
    "what a wonderful sunny party",
    "",
    "so rude, he kept yelling and it was unfair",
    "alone in the dark, shaking",
    "   ",
    'she said "great" and left',
    "the day was fine",
]
# Uneven tuned thresholds with the at-least-one fallback, so predict's decision rule is really exercised.
THRESHOLDS = Thresholds(global_threshold=0.5, per_label=[0.45, 0.5, 0.55], shrinkage=0.5, at_least_one=True)
EXACT = "32-true"  # fp32 in the comparisons: bf16 autocast results depend on how texts are batched


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_bert) -> Path:
    """A 1-epoch multi-label model, its checkpoint given tuned thresholds as calibration would store them."""
    root = tmp_path_factory.mktemp("trained")
    paths = write_dataset(root, multilabel=True)
    summary = train(compose_train(root, quick(tiny_bert, paths, "trainer.max_epochs=1", "logger=none", "test=false")))
    checkpoint = torch.load(summary["last_checkpoint"], map_location="cpu", weights_only=True)
    checkpoint["labelwise"]["net_config"]["thresholds"] = THRESHOLDS.to_dict()
    path = root / "tuned.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def loaded(ckpt):
    return Predictor.from_checkpoint(ckpt)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_predictions(loaded, texts: list[str], records: list[dict]) -> None:
    """Same count and order as the input; blank texts unscored; the rest equal predict_scores + decide."""
    assert [r["text"] for r in records] == texts
    rows = [i for i, text in enumerate(texts) if text.strip()]
    for i, record in enumerate(records):
        if i not in rows:
            assert record == {"text": texts[i], "labels": [], "scores": {}}
    expected = loaded.scores([texts[i] for i in rows], precision=EXACT)
    names = loaded.labels.names
    got = np.array([[records[i]["scores"][name] for name in names] for i in rows])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    chosen = loaded.labels.decide(expected, loaded.thresholds)
    assert [records[i]["labels"] for i in rows] == [[name for name, on in zip(names, row) if on] for row in chosen]


def test_loading_restores_the_trained_model(ckpt, loaded):
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert not loaded.net.training
    for key, value in loaded.net.state_dict().items():
        torch.testing.assert_close(value, state[f"net.{key}"], rtol=0, atol=0)
    assert loaded.thresholds == THRESHOLDS
    assert list(loaded.labels.names) == sorted(WORDS) and loaded.labels.task == "multilabel"
    assert loaded.max_length == 128  # data=jsonl's max_length, stored with the model


def test_predict_text_file_streams_in_order(loaded, tmp_path):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    output = tmp_path / "out" / "preds.jsonl"
    # chunks of 2 and batches of 2: order must survive both the chunking and the length-sorted batching
    count = predict_file(loaded, source, output, batch_size=2, chunk_size=2, precision=EXACT)
    assert count == len(TEXTS)
    assert_predictions(loaded, TEXTS, read_jsonl(output))
    assert not output.with_name("preds.jsonl.partial").exists()
    assert any(r["labels"] for r in read_jsonl(output))  # at_least_one: every scored text gets a label


def test_predict_csv_and_jsonl(loaded, tmp_path):
    texts = [t for t in TEXTS if t] + ["multi-line,\nquoted text"]
    table = tmp_path / "texts.csv"
    with table.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "body"])
        writer.writerows([i, text] for i, text in enumerate(texts))
    predict_file(loaded, table, tmp_path / "csv.jsonl", text_column="body", precision=EXACT)
    assert_predictions(loaded, texts, read_jsonl(tmp_path / "csv.jsonl"))

    records = [{"body": text, "id": i} for i, text in enumerate(texts)] + [{"body": None}]
    lines = tmp_path / "texts.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    predict_file(loaded, lines, tmp_path / "jsonl.jsonl", text_column="body", precision=EXACT)
    assert_predictions(loaded, [*texts, ""], read_jsonl(tmp_path / "jsonl.jsonl"))


def test_predict_to_stdout(loaded, tmp_path, capsys):
    source = tmp_path / "texts.txt"
    source.write_text("\n".join(TEXTS[:3]), encoding="utf-8")  # no final newline
    assert predict_file(loaded, source, "-", precision=EXACT) == 3
    assert_predictions(loaded, TEXTS[:3], [json.loads(line) for line in capsys.readouterr().out.splitlines()])


def test_bad_text_column_lists_what_is_there(loaded, tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("id,body\n1,hello\n")
    with pytest.raises(DataError, match=r"no column 'text'; columns found: \['id', 'body'\]"):
        predict_file(loaded, table, tmp_path / "o.jsonl")
    lines = tmp_path / "t.jsonl"
    lines.write_text('{"body": "hi"}\n')
    with pytest.raises(DataError, match=r"line 1: no key 'text'; found: \['body'\]"):
        predict_file(loaded, lines, tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()  # a failed run leaves no half-written output


@pytest.mark.slow
def test_predict_cli_reads_stdin(loaded, ckpt, tmp_path):
    result = run_cli(
        tmp_path,
        f"ckpt_path={ckpt}",
        "input=-",
        "output=preds/out.jsonl",
        "precision=32-true",
        module="src.predict",
        check=False,
        stdin="\n".join(TEXTS) + "\n",
    )
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "preds" / "out.jsonl")  # relative to the directory the command ran from
    assert_predictions(loaded, TEXTS, records)
    assert f"wrote {len(TEXTS)} predictions" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("src.predict", ["input=x.txt"], ["ckpt_path= is required"]),
        ("src.predict", ["ckpt_path=nowhere.ckpt", "input=x.txt"], ["ckpt_path=", "nowhere.ckpt: no such file"]),
        ("src.predict", ["ckpt_path={ckpt}", "input=missing.txt"], ["input=", "missing.txt: no such file", "input=-"]),
        ("src.predict", ["ckpt_path={ckpt}", "input={table}"], ["no column 'text'", "['id', 'body']", "text_column="]),
        ("src.export", ["ckpt_path={ckpt}", "format=tflite", "output_dir=x"], ["format=tflite", "hf, onnx"]),
    ],
    ids=["no-checkpoint", "missing-checkpoint", "missing-input", "bad-text-column", "bad-format"],
)
def test_bad_input_gets_one_clear_message(ckpt, tmp_path, module, args, expected):
    table = tmp_path / "t.csv"
    table.write_text("id,body\n1,hello\n")
    (tmp_path / "x.txt").write_text("hello\n")
    result = run_cli(tmp_path, *(a.format(ckpt=ckpt, table=table) for a in args), module=module, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: "), result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_export_hf_loads_with_auto_classes(loaded, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from src.export import PARITY_TEXTS, export_hf

    assert export_hf(loaded, tmp_path) < 1e-4
    config = json.loads((tmp_path / "config.json").read_text())
    names = list(loaded.labels.names)
    assert config["id2label"] == {str(i): name for i, name in enumerate(names)}
    assert config["label2id"] == {name: i for i, name in enumerate(names)}
    assert config["thresholds"] == THRESHOLDS.to_dict() and config["label_space"]["task"] == "multilabel"
    assert config["problem_type"] == "multi_label_classification" and config["pooling"] == "mean"
    assert config["max_seq_length"] == 128

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    for texts in (list(PARITY_TEXTS), ["one text, alone", "the day was so dark"]):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            ours = loaded.net(batch["input_ids"], batch["attention_mask"]).logits
            theirs = model(**batch).logits
        torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)


def test_export_onnx_without_the_extra_says_what_to_install(loaded, tmp_path, monkeypatch):
    import src.export

    monkeypatch.setattr(src.export, "ONNX_PACKAGES", ("onnx", "no_such_onnx_package"))
    with pytest.raises(ConfigError, match=r'no_such_onnx_package not installed\): pip install -e "\.\[onnx\]"'):
        src.export.export_onnx(loaded, tmp_path)


@pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "onnxruntime")),
    reason='the optional ONNX extra is not installed (pip install -e ".[onnx]")',
)
def test_export_onnx_matches_the_checkpoint(loaded, tmp_path):
    import onnxruntime

    from src.export import export_onnx

    assert export_onnx(loaded, tmp_path) < 1e-3
    info = json.loads((tmp_path / "labelwise.json").read_text())
    assert info["label_names"] == list(loaded.labels.names) and info["thresholds"] == THRESHOLDS.to_dict()
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for texts in (["a single text"], [t for t in TEXTS if t.strip()]):  # other batch sizes and lengths
        batch = loaded.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            ours = loaded.net(batch["input_ids"], batch["attention_mask"]).logits.numpy()
        (theirs,) = session.run(None, {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})
        np.testing.assert_allclose(theirs, ours, atol=1e-3)
