"""Inference entry points on a tiny trained model: Predictor.from_checkpoint, predict (files, stdin, CLI), export."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from src.errors import ConfigError, DataError
from src.inference import Predictor
from src.metrics.thresholds import Thresholds, calibrate
from src.predict import predict_file
from src.runtime import cpu_int8
from src.train import train
from tests.helpers import (
    WORDS,
    compose_train,
    free_port,
    hand_folds,
    quick,
    run_cli,
    wait_until_up,
    write_dataset,
)

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
        ("src.export", ["ckpt_path={ckpt}", "format=tflite", "output_dir=x"], ["format=tflite", "hf, onnx, mlflow"]),
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


def compose_app(name: str, overrides: list[str]):
    """An entry point's config as its CLI would compose it (run in-process: faster than a subprocess)."""
    from hydra import compose, initialize_config_dir

    from src import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        return compose(name, overrides)


@pytest.fixture(scope="module")
def untuned(ckpt, tmp_path_factory) -> Path:
    """The fixture's checkpoint as saved before any validation epoch: no thresholds, though the run tunes them."""
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["labelwise"]["net_config"]["thresholds"] = None
    path = tmp_path_factory.mktemp("untuned") / "untuned.ckpt"
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["format=mlflow", "registered_model_name=team/model"],
         r"registered_model_name='team/model': the MLflow model registry refuses it .*cannot contain '/' or ':'"),
        (["output_dir=x", "quantize=int8"], "quantize=int8 applies to format=onnx only"),
        (["output_dir=x", "format=onnx", "quantize=int4"], "quantize=int4: must be one of int8"),
        (["output_dir=x", "format=onnx", "quantize=int8", "max_f1_loss=-1"], "max_f1_loss=-1: .* a number >= 0"),
        (["format=mlflow", "ckpt_path={untuned}"], "holds no tuned decision thresholds .* allow_default_thresholds"),
    ],
    ids=["registry-name", "quantize-hf", "quantize-int4", "negative-f1-loss", "mlflow-without-thresholds"],
)
def test_export_refuses_bad_options_before_writing(ckpt, untuned, tmp_path, monkeypatch, overrides, expected):
    from src.export import export

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=expected):
        export(compose_app("export", [f"ckpt_path={ckpt}", *(o.format(untuned=untuned) for o in overrides)]))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("options", "expected"),
    [({"engine": "tensorrt"}, "engine=tensorrt: must be one of torch, onnx"),
     ({"quantize": "int8"}, "quantize=int8 runs on ONNX Runtime: add engine=onnx")],
)
def test_predictor_refuses_bad_engine_options(ckpt, options, expected):
    with pytest.raises(ConfigError, match=expected):
        Predictor.load(ckpt, **options)


def test_export_hf_loads_with_auto_classes(loaded, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from src.export import export_hf
    from src.parity import PARITY_TEXTS

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


def test_onnx_without_the_extra_says_what_to_install(loaded, ckpt, tmp_path, monkeypatch):
    import src.onnx_engine

    monkeypatch.setattr(src.onnx_engine, "ONNX_PACKAGES", ("onnx", "no_such_onnx_package"))
    with pytest.raises(ConfigError, match=r'format=onnx needs .*no_such_onnx_package not installed\): pip install -e "'
                                          r'\.\[onnx\]"'):
        src.onnx_engine.export_onnx(loaded, tmp_path)
    with pytest.raises(ConfigError, match=r'engine=onnx needs .*no_such_onnx_package not installed'):
        Predictor.load(ckpt, engine="onnx", cache_dir=tmp_path)


needs_onnx = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "onnxruntime")),
    reason='the optional ONNX extra is not installed (pip install -e ".[onnx]")',
)


@needs_onnx
def test_export_onnx_matches_the_checkpoint(loaded, tmp_path):
    import onnx
    import onnxruntime

    from src.onnx_engine import export_onnx

    export_onnx(loaded, tmp_path)
    info = json.loads((tmp_path / "labelwise.json").read_text())
    assert info["label_names"] == list(loaded.labels.names) and info["thresholds"] == THRESHOLDS.to_dict()
    # each layer's attention is ONNX's one Attention op (opset 23), which ONNX Runtime runs as one kernel
    ops = [node.op_type for node in onnx.load(str(tmp_path / "model.onnx"), load_external_data=False).graph.node]
    assert ops.count("Attention") == loaded.net.encoder.config.num_hidden_layers
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for texts in (["a single text"], [t for t in TEXTS if t.strip()]):  # other batch sizes and lengths
        batch = loaded.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.inference_mode():
            ours = loaded.net(batch["input_ids"], batch["attention_mask"]).logits.numpy()
        (theirs,) = session.run(None, {k: batch[k].numpy() for k in ("input_ids", "attention_mask")})
        np.testing.assert_allclose(theirs, ours, atol=1e-3)


@needs_onnx
def test_an_opset_onnx_runtime_cannot_load_is_refused_by_name(loaded, tmp_path):
    """torch writes graphs at opsets newer than ONNX Runtime runs (its Attention op there): one error naming the opset
    and the default, not onnxruntime's stack trace."""
    from src.onnx_engine import export_onnx

    with pytest.raises(ConfigError, match=r"^opset=30: ONNX Runtime cannot load the exported graph \(.*\)\. Use an "
                                          r"opset this onnxruntime supports: the default opset=23 does\.$"):
        export_onnx(loaded, tmp_path, opset=30)


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file() or not any(
    f in os.uname().machine for f in ("x86", "amd64", "i386", "i686")), reason="reads the x86 flags of /proc/cpuinfo")
def test_cpu_int8_agrees_with_the_kernel_flags():
    """torch's VNNI probe (plus AVX-VNNI) against the flags Linux reports for the first CPU."""
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    assert cpu_int8() == {"machine": os.uname().machine.lower(), "vnni": bool({"avx512_vnni", "avx_vnni"} & set(flags))}


@needs_onnx
@pytest.mark.parametrize(("measured", "here", "noted"), [(True, False, True), (True, True, False),
                                                          (False, False, False), (True, None, False)])
def test_int8_measured_with_vnni_is_noted_on_a_cpu_without(loaded, tmp_path, monkeypatch, capsys, measured, here,
                                                           noted):
    """Without VNNI int8 kernels add in saturating 16-bit, so an F1 change measured with VNNI need not hold: loading
    such an export on an x86 CPU without VNNI says so (not on ARM, where ``vnni`` is None, nor when both agree)."""
    import src.onnx_engine

    src.onnx_engine.export_onnx(loaded, tmp_path)  # only labelwise.json's record is read: fp32 weights do
    info = json.loads((tmp_path / "labelwise.json").read_text())
    info["quantization"] = {"macro_f1_change": -0.0031, "cpu": {"machine": "x86_64", "vnni": measured}}
    (tmp_path / "labelwise.json").write_text(json.dumps(info))
    monkeypatch.setattr(src.onnx_engine, "cpu_int8", lambda: {"machine": "x86_64", "vnni": here})
    capsys.readouterr()
    src.onnx_engine.load_onnx(tmp_path)
    note = capsys.readouterr().err
    assert ("measured on a CPU with VNNI" in note and "-0.0031" in note and "quantize=int8" in note) == noted


LONG = " ".join(["so rude and unfair, he kept yelling in the dark"] * 30)  # > max_length tokens: truncated


def card_code(directory: Path) -> str:
    """The python block of a model card's "How to use" section."""
    text = (directory / "README.md").read_text()
    return text.split("## How to use", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_hf_export_card_and_pipeline_label_texts_as_predict_does(loaded, ckpt, tmp_path):
    """The card's own usage code runs, and pipeline() (truncating like training) and model.decide give
    src.predict's scores and labels, a text longer than max_length included."""
    from huggingface_hub import ModelCard

    from src.export import write_export

    write_export(loaded, ckpt, tmp_path, "hf", str(tmp_path))
    texts = [t for t in TEXTS if t.strip()] + [LONG]
    assert len(loaded.tokenizer(LONG)["input_ids"]) > loaded.max_length
    expected = loaded.predict(texts, precision=EXACT)

    namespace: dict = {}
    exec(card_code(tmp_path), namespace)  # noqa: S102 (the documented snippet, run as a user would)
    classify, model, tokenizer = namespace["classify"], namespace["model"], namespace["tokenizer"]
    assert type(classify).__name__ == "LabelwisePipeline" and tokenizer.model_max_length == loaded.max_length
    for row, record in zip(classify(texts), expected):
        assert {r["label"]: r["score"] for r in row} == pytest.approx(record["scores"], abs=1e-5)
    batch = tokenizer(texts, truncation=True, max_length=model.config.max_seq_length, padding=True,
                      return_tensors="pt")
    with torch.inference_mode():
        decisions = model.decide(model.probabilities(model(**batch).logits))
    assert [[model.config.id2label[i] for i in row.nonzero().flatten().tolist()] for row in decisions] == [
        r["labels"] for r in expected]
    assert namespace["labels"] == [loaded.predict(["What a wonderful day!"], precision=EXACT)[0]["labels"]]

    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert card.data.base_model is None  # the tiny encoder is a local directory, not a hub id
    summary = json.loads((Path(loaded.metadata["config"]["paths"]["output_dir"]) / "summary.json").read_text())
    val = summary["metrics"]["val"]
    low, high = val["macro_f1_ci95"]
    for text in (f"| val | {val['macro_f1_tuned']:.4f} | {low:.4f} - {high:.4f} | {val['macro_f1']:.4f} |",
                 *(f"| {name} | {count} | {cut:.3f} |" for name, count, cut in
                   zip(loaded.labels.names, loaded.labels.counts, THRESHOLDS.per_label)),
                 "and its top label when none passes", "exported from `tuned.ckpt`", "data fingerprint: `not "
                 "available`", "| loss | AsymmetricLoss(gamma_neg=4.0", "| epochs (max) | 1 |",
                 "trust_remote_code=True"):
        assert text in card.text, text


def test_card_of_a_model_without_its_run_says_not_available(loaded):
    from src.model_card import model_card

    card = model_card(Predictor(loaded.net, loaded.tokenizer, metadata={}), None, "exported")
    for text in ("Metrics: not available", "Training configuration: not available", "MLflow run: `not available`"):
        assert text in card.text


def test_push_to_hub_offline_or_without_token_fails_before_any_work(tmp_path, monkeypatch):
    """Checked before the checkpoint is even opened: it does not exist here."""
    from huggingface_hub import constants

    from src.export import export

    monkeypatch.chdir(tmp_path)
    cfg = compose_app("export", ["ckpt_path=never-opened.ckpt", "output_dir=out", "push_to_hub=someone/emotions"])
    with pytest.raises(ConfigError, match=r"^push_to_hub=someone/emotions needs the network, but HF_HUB_OFFLINE"):
        export(cfg)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for name in ("HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH"):  # no token a user logged in with on this machine
        monkeypatch.setattr(constants, name, str(tmp_path / "no-token"))
    with pytest.raises(ConfigError, match=r"^push_to_hub=someone/emotions: no Hugging Face token"):
        export(cfg)
    assert not list(tmp_path.iterdir())


def onnx_logits(directory: Path, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """onnxruntime on the exported file directly, one padded batch (no labelwise code in the way)."""
    import onnxruntime

    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    session = onnxruntime.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {key: batch[key] for key in ("input_ids", "attention_mask")})
    return logits


def val_rows(ckpt_root: Path, names: tuple[str, ...]) -> tuple[list[str], np.ndarray]:
    """The fixture's val.jsonl read directly: texts and 0/1 targets."""
    records = read_jsonl(ckpt_root / "val.jsonl")
    targets = np.array([[name in r["labels"] for name in names] for r in records], dtype=int)
    return [r["text"] for r in records], targets


@needs_onnx
def test_int8_export_records_the_val_f1_change_it_measured(loaded, ckpt, tmp_path):
    """The stored fp32 and int8 val macro-F1 equal sklearn's on decisions from the checkpoint and from the int8 file
    run by onnxruntime directly; as the thresholds are the run's max_f1 ones, the checked change is cross-fitted
    (thresholds calibrated with the run's options on fp32 scores of one half, both scored on the other, 10
    halvings); the Linear layers are int8 and the card reports the change."""
    import onnx
    from sklearn.metrics import f1_score

    from src.export import write_export

    write_export(loaded, ckpt, tmp_path, "onnx", str(tmp_path), quantize="int8", max_f1_loss=1.0)
    record = json.loads((tmp_path / "labelwise.json").read_text())["quantization"]
    texts, targets = val_rows(ckpt.parent, loaded.labels.names)
    scores = {"fp32": loaded.scores(texts, precision=EXACT),
              "int8": 1 / (1 + np.exp(-onnx_logits(tmp_path, loaded.tokenizer, texts, loaded.max_length)))}
    f1 = {name: f1_score(targets, THRESHOLDS.apply(scores[name]), average="macro", zero_division=0)
          for name in ("fp32", "int8")}
    assert record["val_macro_f1"] == pytest.approx(f1, abs=1e-9) and record["val_rows"] == len(texts)
    options, changes = loaded.metadata["config"]["thresholds"], []
    for fit, held in hand_folds(len(texts), range(10)):
        rule = calibrate(scores["fp32"][fit], targets[fit], **options)
        changes.append(f1_score(targets[held], rule.apply(scores["int8"][held]), average="macro", zero_division=0)
                       - f1_score(targets[held], rule.apply(scores["fp32"][held]), average="macro", zero_division=0))
    assert record["change_estimate"] == "cross-fitted (10 halvings)" and record["max_f1_loss"] == 1.0
    assert record["macro_f1_change"] == pytest.approx(np.mean(changes), abs=1e-6)

    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {node.op_type for node in graph.node}
    assert not (tmp_path / "model.onnx.data").exists()
    # per output channel: each int8 weight [in, out] has one zero point (and scale) per column, not one per matrix
    shapes = {tensor.name: tuple(tensor.dims) for tensor in graph.initializer}
    weights = [node.input[1:4:2] for node in graph.node if node.op_type == "MatMulInteger"]
    assert weights and all(shapes[zero] == shapes[weight][1:] for weight, zero in weights)
    card = (tmp_path / "README.md").read_text()
    assert f"val macro-F1 {f1['fp32']:.4f} (fp32) -> {f1['int8']:.4f} (int8)" in card
    assert f"change {record['macro_f1_change']:+.4f} cross-fitted (10 halvings)" in card
    assert record["cpu"] == cpu_int8()  # where it was measured: int8 kernels score differently without VNNI
    if record["cpu"]["vnni"] is not None:
        assert f"CPU {'with' if record['cpu']['vnni'] else 'without'} VNNI" in card
    assert "onnx" in card.split("---")[1]  # a tag in the card's metadata


@pytest.fixture(scope="module")
def fragile(ckpt, loaded, tmp_path_factory) -> Path:
    """A checkpoint whose thresholds make int8 lose F1 for sure: one label's threshold sits between the fp32 and the
    int8 score of one val row, where no other row's two scores fall on different sides of it, so int8 turns exactly
    one true positive into a false negative (or adds one false positive to a label both models get partly right);
    every other label's threshold is 1 (nothing predicted by either model, F1 0 for both)."""
    from src.onnx_engine import export_onnx, load_onnx

    root = tmp_path_factory.mktemp("fragile")
    (root / "probe").mkdir()
    export_onnx(loaded, root / "probe", quantize="int8", max_f1_loss=None)
    texts, targets = val_rows(ckpt.parent, loaded.labels.names)
    fp32 = loaded.scores(texts, precision=EXACT)
    int8 = load_onnx(root / "probe").scores(texts, precision=EXACT)
    candidates = []
    # a positive row int8 scores lower (a true positive lost), or a negative row it scores higher while some positive
    # stays above the cut for both (a false positive added to a label fp32 gets partly right)
    lost = (targets == 1) & (fp32 - int8 > 2e-4)
    added = (targets == 0) & (int8 - fp32 > 2e-4)
    for row, label in zip(*np.nonzero(lost | added)):  # well above fp32 noise
        cut = float(fp32[row, label] + int8[row, label]) / 2
        flips = (fp32[:, label] > cut) != (int8[:, label] > cut)
        kept = (targets[:, label] == 1) & (fp32[:, label] > cut) & (int8[:, label] > cut)
        if flips.sum() == 1 and (lost[row, label] or kept.any()):
            candidates.append((abs(fp32[row, label] - int8[row, label]), label, cut))
    assert candidates, "no val row whose int8 score alone crosses a threshold the wrong way"
    _, label, cut = max(candidates)
    per_label = [1.0] * len(loaded.labels.names)
    per_label[label] = cut
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    # chosen by hand, not tuned on val: the check is the in-sample change, which this flip decides
    checkpoint["labelwise"]["net_config"]["thresholds"] = Thresholds(0.5, per_label, 0.0, False,
                                                                     policy=f"fixed={per_label}").to_dict()
    torch.save(checkpoint, root / "fragile.ckpt")
    return root / "fragile.ckpt"


@needs_onnx
def test_int8_past_the_f1_limit_is_refused_and_nothing_is_written(fragile, tmp_path, monkeypatch):
    from src.export import export
    from src.onnx_engine import QuantizationError

    monkeypatch.chdir(tmp_path)
    cfg = compose_app("export", [f"ckpt_path={fragile}", "format=onnx", "quantize=int8", "max_f1_loss=0",
                                 "output_dir=int8"])
    with pytest.raises(QuantizationError, match=r"^quantize=int8 loses .* more than max_f1_loss=0: nothing was "):
        export(cfg)
    assert not list(tmp_path.iterdir())


@needs_onnx
def test_engine_onnx_exports_once_into_its_cache_and_predicts_like_torch(loaded, ckpt, tmp_path):
    texts = [t for t in TEXTS if t.strip()] + [LONG]
    cache = tmp_path / "cache"
    onnx = Predictor.load(ckpt, engine="onnx", cache_dir=cache)
    np.testing.assert_allclose(onnx.scores(texts, batch_size=2), loaded.scores(texts, precision=EXACT), atol=1e-5)
    (entry,) = cache.iterdir()
    stamp = (entry / "model.onnx").stat().st_mtime_ns
    predict_file(Predictor.load(ckpt, engine="onnx", cache_dir=cache), _lines(tmp_path, texts), tmp_path / "o.jsonl")
    assert (entry / "model.onnx").stat().st_mtime_ns == stamp and len(list(cache.iterdir())) == 1  # reused
    assert [r["labels"] for r in read_jsonl(tmp_path / "o.jsonl")] == [r["labels"] for r in loaded.predict(texts)]
    with pytest.raises(ConfigError, match=r"is an ONNX export: it runs with engine=onnx"):
        Predictor.load(entry, engine="torch")
    with pytest.raises(ConfigError, match=r"quantize=int8: the ONNX export in .* is fp32"):
        Predictor.load(entry, quantize="int8")


def _lines(directory: Path, texts: list[str]) -> Path:
    path = directory / "texts.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


@needs_onnx
def test_predict_app_engine_onnx_int8(loaded, ckpt, tmp_path, monkeypatch, capsys):
    from src.predict import predict

    texts = [t for t in TEXTS if t.strip()]
    monkeypatch.chdir(tmp_path)
    predict(compose_app("predict", [f"ckpt_path={ckpt}", f"input={_lines(tmp_path, texts)}", "output=o.jsonl",
                                    "engine=onnx", "quantize=int8", "max_f1_loss=1"]))
    records = read_jsonl(tmp_path / "o.jsonl")
    assert [r["text"] for r in records] == texts
    assert "int8: val macro-F1" in capsys.readouterr().err
    (entry,) = (tmp_path / "outputs" / ".cache" / "onnx").iterdir()  # onnx_cache_dir, relative to the working dir
    # the scores of the cached int8 file run by onnxruntime directly (int8 of a tiny random model can be far from
    # fp32: that difference is what the F1 check measures, not something to bound here)
    from src.onnx_engine import load_onnx

    expected = load_onnx(entry).scores(texts, precision=EXACT)
    got = np.array([[r["scores"][name] for name in loaded.labels.names] for r in records])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert json.loads((entry / "labelwise.json").read_text())["quantization"]["val_rows"] == 32


def post(url: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.slow
def test_registered_mlflow_model_serves_src_predict_labels_over_rest(loaded, ckpt, tmp_path):
    """format=mlflow registers a pyfunc model (signature, input example); `mlflow models serve` on it answers with
    src.predict's labels and scores, and bad requests with a 4xx and a message, not a stack trace."""
    from mlflow import MlflowClient

    from src.export import export_mlflow

    store = f"sqlite:///{tmp_path}/mlflow.db"
    info = export_mlflow(loaded, ckpt, {"registered_model_name": "emotions"}, uri=store)
    version = MlflowClient(store).get_model_version("emotions", "1")
    assert version.run_id == info.run_id and info.registered_model_version == 1
    signature = info.signature.to_dict()
    assert json.loads(signature["inputs"]) == [{"type": "string", "required": True}]
    assert set(json.loads(signature["outputs"])[0]["properties"]) == {"labels", "scores"}
    assert info.saved_input_example_info["type"] == "json_object"

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/emotions/1", "--env-manager", "local",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": store, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/ping", server, tmp_path / "serve.log")
        texts = [*TEXTS, LONG]
        status, body = post(f"{url}/invocations", json.dumps({"inputs": texts}).encode())
        assert status == 200, body
        served = json.loads(body)["predictions"]
        expected = loaded.predict(texts, precision=EXACT)
        assert [r["labels"] for r in served] == [r["labels"] for r in expected]
        for got, want in zip(served, expected):
            assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)
        for bad in (b'{"inputs": []}', b'{"inputs": [1, 2]}', b'{"inputs": [["nested"]]}', b"not json",
                    b'{"texts": ["a"]}'):
            status, body = post(f"{url}/invocations", bad)
            assert 400 <= status < 500 and "Traceback" not in body, (bad, status, body)
            assert json.loads(body)["message"], (bad, body)
            if bad == b'{"inputs": []}':
                assert "no texts: send at least one" in json.loads(body)["message"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
