"""model=hierarchical: long texts read as overlapping windows, pooled per window and aggregated per document.

References: windows cut by hand from the untruncated token ids; the model against a loop over one window at a time;
batches against their chunk budget; scores of a long text equal in eval, predict (checkpoint, HF export through
``pipeline()``, ONNX export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig

from src.data.batching import LengthGroupedBatchSampler, PadCollator, sorted_batches
from src.data.token_cache import tokenize_with_lengths
from src.inference import Predictor
from src.models.modeling_labelwise import LabelwiseConfig, LabelwiseForSequenceClassification
from src.train import train
from tests.helpers import FILLER, compose_train, quick, write_dataset

LONG = "hierarchical: " + " ".join(f"word{i}" for i in range(120))


@pytest.mark.parametrize(("max_length", "stride", "max_chunks"), [(16, 0, 3), (16, 4, 20), (12, 5, 2), (32, 8, 1)])
def test_windows_are_cut_as_by_hand(tmp_path, tiny_bert, max_length, stride, max_chunks):
    """Window i holds body tokens [i * step, i * step + width) with its own [CLS]/[SEP] (width = max_length - 2,
    step = width - stride), the last one the tail; at most max_chunks; lengths count the untruncated text, covered
    the tokens the kept windows hold; the token cache gives back the same."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    texts = [LONG, "short text", " ".join(FILLER * 3)]
    for _ in range(2):  # tokenised, then read from the cache
        windows, lengths, covered = tokenize_with_lengths(tokenizer, texts, max_length, tmp_path, stride, max_chunks)
        for text, got, length, seen in zip(texts, windows, lengths, covered):
            body = tokenizer(text, add_special_tokens=False)["input_ids"]
            width, step = max_length - 2, max_length - 2 - stride
            starts = [0]
            while starts[-1] + width < len(body):
                starts.append(starts[-1] + step)
            expected = [[tokenizer.cls_token_id, *body[s : s + width], tokenizer.sep_token_id] for s in starts]
            got = got if max_chunks > 1 else [got]
            assert [w.tolist() for w in got] == expected[:max_chunks]
            assert length == len(body) + 2
            kept = expected[:max_chunks]
            assert seen == min(len(body), starts[len(kept) - 1] + width) + 2
    assert len(tokenizer(LONG)["input_ids"]) > 3 * max_length  # the long text overflows in every case


def tiny_net(aggregate: str, hidden: int = 0) -> LabelwiseForSequenceClassification:
    torch.manual_seed(0)
    encoder = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)
    config = LabelwiseConfig(encoder=encoder.to_dict(), head_hidden=hidden, num_labels=3,
                             chunking={"max_chunks": 4, "stride": 2, "aggregate": aggregate,
                                       "max_chunks_per_batch": 8})
    return LabelwiseForSequenceClassification(config).eval()


@pytest.mark.parametrize("aggregate", ["mean", "max", "attention"])
def test_the_model_equals_a_loop_over_windows(aggregate):
    """Documents of 3, 1 and 2 windows (padded windows, padded chunks) give the logits of encoding each real window
    alone, unpadded, and aggregating by hand."""
    net = tiny_net(aggregate, hidden=8)
    generator = torch.Generator().manual_seed(1)
    docs = [[torch.randint(5, 100, (n,), generator=generator) for n in sizes] for sizes in ([10, 10, 4], [7], [10, 3])]
    batch = PadCollator(0).pad([[w.numpy() for w in doc] for doc in docs])
    assert batch["input_ids"].shape == (3, 3, 16)  # padded to a multiple of 8
    with torch.no_grad():
        logits = net(**batch).logits
        expected = []
        for doc in docs:
            vectors = torch.cat([net.embed(window[None]) for window in doc])
            if aggregate == "mean":
                vector = vectors.mean(0)
            elif aggregate == "max":
                vector = vectors.max(0).values
            else:
                vector = (net.head.chunk_score(vectors).softmax(0) * vectors).sum(0)
            head = net.head
            expected.append(head.out_proj(head.activation(head.dense(vector))))
    torch.testing.assert_close(logits, torch.stack(expected), atol=1e-5, rtol=1e-5)
    flat = net(input_ids=batch["input_ids"][:, 0], attention_mask=batch["attention_mask"][:, 0]).logits
    torch.testing.assert_close(flat[1], logits[1])  # 2-D ids: one window per document


def test_batches_keep_to_the_chunk_budget_and_cover_every_document_once():
    """Training batches: every document once per epoch, at most max_cost windows (a document alone may have more than
    the budget allows only if it is the batch), the same batch count every epoch and equal to len(); evaluation
    batches too."""
    rng = np.random.default_rng(0)
    costs = rng.integers(1, 9, size=500)
    lengths = costs * 100 - rng.integers(0, 90, size=500)
    sampler = LengthGroupedBatchSampler(lengths, batch_size=16, seed=3, window=4, costs=costs, max_cost=24)
    counts = set()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        counts.add(len(batches))
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert all(len(b) <= 16 and (costs[b].sum() <= 24) for b in batches)
        assert all(len(set(costs[b])) == 1 for b in batches)  # no document padded with empty windows
    assert counts == {len(sampler)}
    evaluation = sorted_batches(lengths, 16, costs, 24)
    assert sorted(i for b in evaluation for i in b) == list(range(500))
    assert all(len(b) == 1 or costs[b].sum() <= 24 for b in evaluation)


HIERARCHICAL = ["model=hierarchical", "data.max_length=16", "model.max_chunks=4", "model.chunk_stride=4",
                "model.max_chunks_per_batch=20"]


@pytest.mark.parametrize(("multilabel", "loss", "aggregate", "sampler"), [
    (True, "asymmetric", "attention", "none"), (False, "ce", "max", "oversample"), (True, "focal", "mean", "none")])
def test_trains_reports_truncation_and_predicts_as_it_evaluated(tmp_path, tiny_bert, multilabel, loss, aggregate,
                                                                sampler):
    """A few steps on long texts; the summary reports what 4 windows cut; a Predictor from the best checkpoint
    scores the val texts (long ones) as the evaluation pass did."""
    paths = write_dataset(tmp_path, multilabel, lead=40)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, *HIERARCHICAL, f"loss={loss}", f"model.aggregate={aggregate}",
                                        f"sampler={sampler}",
                                        "trainer.max_epochs=2", "trainer.precision=32-true", "logger=csv"))
    summary = train(cfg)
    cut = summary["data_checks"]["truncation"]["train"]
    assert cut["limit"] == "model.max_chunks=4 windows of 16 tokens"
    assert cut["truncated"] == 0  # 4 windows of 14 body tokens, stride 4: 44 tokens cover 40 fillers + labels
    predictor = Predictor.from_checkpoint(summary["best_checkpoint"])
    assert predictor.net.config.chunking == {"max_chunks": 4, "stride": 4, "aggregate": aggregate,
                                              "max_chunks_per_batch": 20}
    texts = [json.loads(line)["text"] for line in paths["val"].read_text().splitlines()]
    scores = predictor.scores(texts, batch_size=7, precision="32-true")
    saved = np.load(tmp_path / "run" / "report" / "predictions_val.npz")
    np.testing.assert_allclose(scores, saved["scores"], atol=1e-5)
    # every window counts: the same text cut to its first window scores differently
    first_window = predictor.scores([" ".join(t.split()[:10]) for t in texts], batch_size=7, precision="32-true")
    assert not np.allclose(scores, first_window, atol=1e-4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert):
    """A multi-label hierarchical model (attention aggregation) trained on long texts: its checkpoint, val texts
    and data files."""
    tmp_path = tmp_path_factory.mktemp("hierarchical")
    paths = write_dataset(tmp_path, multilabel=True, lead=40)
    cfg = compose_train(tmp_path, quick(tiny_bert, paths, *HIERARCHICAL, "model.aggregate=attention",
                                        "trainer.max_epochs=1", "report=false", "logger=csv"))
    summary = train(cfg)
    texts = [json.loads(line)["text"] for line in paths["val"].read_text().splitlines()]
    return summary["best_checkpoint"], [*texts[:6], " ".join(texts)], paths  # the last text: far beyond 4 windows


def test_exports_read_long_texts_as_the_checkpoint_does(trained, tmp_path):
    """pipeline() on the Hugging Face export cuts the windows itself and gives the checkpoint's scores; the ONNX
    export (inputs [batch, chunks, sequence]) too."""
    from transformers import pipeline

    from src.export import write_export

    ckpt, texts, _ = trained
    ckpt = Path(ckpt)
    predictor = Predictor.from_checkpoint(ckpt)
    expected = predictor.predict(texts, precision="32-true")
    (tmp_path / "hf").mkdir()
    write_export(predictor, ckpt, tmp_path / "hf", "hf", str(tmp_path / "hf"))
    classify = pipeline("text-classification", model=str(tmp_path / "hf"), trust_remote_code=True, top_k=None)
    for row, record in zip(classify(texts), expected):
        assert {r["label"]: r["score"] for r in row} == pytest.approx(record["scores"], abs=1e-5)

    pytest.importorskip("onnxruntime", reason='the optional ONNX extra is not installed (pip install -e ".[onnx]")')
    (tmp_path / "onnx").mkdir()
    write_export(predictor, ckpt, tmp_path / "onnx", "onnx", str(tmp_path / "onnx"))
    onnx = Predictor.load(tmp_path / "onnx")
    np.testing.assert_allclose(onnx.scores(texts, batch_size=3), predictor.scores(texts, precision="32-true"),
                               atol=1e-4)


def test_predict_reads_a_long_text_from_stdin_as_in_python(trained, tmp_path):
    from tests.helpers import run_cli

    ckpt, texts, _ = trained
    run_cli(tmp_path, f"ckpt_path={ckpt}", "input=-", "output=out.jsonl", "precision=32-true", module="src.predict",
            stdin="\n".join(texts) + "\n")
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = Predictor.from_checkpoint(ckpt).predict(texts, precision="32-true")
    assert [r["labels"] for r in records] == [r["labels"] for r in expected]
    for got, want in zip(records, expected):
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)


@pytest.mark.slow
def test_ddp_shards_documents_and_gathers_each_once(tmp_path, tiny_bert):
    """Two gloo processes: val documents sharded in chunk-capped batches (padded to equal counts per rank) come back
    once each, with the scores one process computes from the checkpoint."""
    from tests.helpers import on_tiny, run_cli

    paths = write_dataset(tmp_path, multilabel=True, rows=60, lead=40)
    run_cli(tmp_path, "strategy=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
            "trainer.precision=32-true", *on_tiny(tiny_bert, paths), *HIERARCHICAL, "model.max_chunks_per_batch=9",
            "data.eval_batch_size=5", "hydra.run.dir=ddp")
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    saved = np.load(tmp_path / "ddp" / "report" / "predictions_val.npz")
    texts = [json.loads(line)["text"] for line in paths["val"].read_text().splitlines()]
    assert len(saved["scores"]) == len(texts) == 20
    scores = Predictor.from_checkpoint(summary["best_checkpoint"]).scores(texts, precision="32-true")
    np.testing.assert_allclose(scores, saved["scores"], atol=1e-5)


def test_eval_and_thresholds_take_a_hierarchical_checkpoint(trained, tmp_path):
    """src.eval on a file scores it as the Predictor does; src.thresholds re-tunes on it and writes a new
    checkpoint that keeps the windows."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from src.eval import evaluate_checkpoint
    from src.thresholds import choose_thresholds
    from tests.helpers import CONF

    ckpt, _, paths = trained
    test_file = paths["test"]
    data = ["data=jsonl", f"data.source.train={test_file}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        eval_cfg = compose("eval", [f"ckpt_path={ckpt}", *data, "split=train", "precision=32-true"])
        thresholds_cfg = compose("thresholds", [f"ckpt_path={ckpt}", *data, "split=train", "policy=top_k", "value=1",
                                                f"output={tmp_path / 'top1.ckpt'}"])
    for cfg in (eval_cfg, thresholds_cfg):
        with open_dict(cfg):
            cfg.paths.root_dir = str(tmp_path)
            cfg.paths.output_dir = str(tmp_path / "out")
    evaluate_checkpoint(eval_cfg)
    saved = np.load(tmp_path / "out" / "report" / "predictions_train.npz")
    texts = [json.loads(line)["text"] for line in test_file.read_text().splitlines()]
    np.testing.assert_allclose(Predictor.from_checkpoint(ckpt).scores(texts, precision="32-true"), saved["scores"],
                               atol=1e-5)
    choose_thresholds(thresholds_cfg)
    retuned = Predictor.from_checkpoint(tmp_path / "top1.ckpt")
    assert retuned.net.config.chunking["max_chunks"] == 4 and retuned.thresholds.policy.startswith("top_k=1")
    assert all(len(record["labels"]) == 1 for record in retuned.predict(texts[:5]))
