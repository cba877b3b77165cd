"""init_from: a new run starts from a trained model's encoder and, label by label, its head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import src.train as entry
from src.errors import ConfigError
from src.inference import Predictor
from src.labels import LabelSpace
from src.models.build import classifier
from src.models.warm_start import warm_start
from tests.helpers import compose_train, quick, write_dataset

NO_EXTRAS = ["logger=none", "report=false", "test=false"]


@pytest.fixture(scope="module")
def source(tmp_path_factory, tiny_bert) -> tuple[Path, dict[str, Path], float]:
    """A tiny model trained on the keyword data (labels joy, anger, fear), that data and its val macro AUROC."""
    tmp = tmp_path_factory.mktemp("warm-source")
    data = write_dataset(tmp, multilabel=True, rows=192)
    # lr 3e-3: at quick()'s 1e-3 some random tiny BERTs stayed near chance (val AUROC 0.56-0.61 in 2 of 8 inits)
    summary = entry.train(compose_train(tmp, quick(tiny_bert, data, *NO_EXTRAS, "trainer.max_epochs=8",
                                                   "optim.lr=3e-3")))
    return Path(summary["best_checkpoint"]), data, summary["metrics"]["val"]["macro_auroc"]


def test_encoder_and_the_rows_of_shared_labels_come_from_the_source(source, tiny_bert):
    checkpoint, _, _ = source
    trained = Predictor.from_checkpoint(checkpoint).net.state_dict()
    net = classifier(tiny_bert, labels=LabelSpace("multilabel", ("fear", "surprise", "joy")), max_length=64)
    fresh = {key: value.clone() for key, value in net.state_dict().items()}
    account = warm_start(net, checkpoint)
    after = net.state_dict()
    for key, value in after.items():
        if key.startswith("encoder."):
            assert torch.equal(value, trained[key]), key
            assert not torch.equal(value, fresh[key]) or "position_ids" in key or "token_type" in key, key
    source_rows = {label: row for row, label in enumerate(Predictor.from_checkpoint(checkpoint).labels.names)}
    assert set(source_rows) == {"joy", "anger", "fear"}
    for row, label in enumerate(("fear", "surprise", "joy")):
        taken = (trained, source_rows[label]) if label in source_rows else (fresh, row)
        expected = (taken[0]["head.out_proj.weight"][taken[1]], taken[0]["head.out_proj.bias"][taken[1]])
        assert torch.equal(after["head.out_proj.weight"][row], expected[0]), label
        assert torch.equal(after["head.out_proj.bias"][row], expected[1]), label
    assert "output rows of 2 of 3 labels (new: surprise)" in account


def test_a_warm_started_run_keeps_what_the_source_learnt(source, tiny_bert, tmp_path):
    """At a learning rate too small to learn anything in one epoch, only the warm start can score well."""
    checkpoint, data, learnt = source
    scores = {}
    for name, extra in (("warm", [f"init_from={checkpoint}"]), ("cold", [])):
        cfg = compose_train(tmp_path / name, quick(tiny_bert, data, *NO_EXTRAS, "trainer.max_epochs=1",
                                                   "optim.lr=1e-9", *extra))
        scores[name] = entry.train(cfg)["metrics"]["val"]["macro_auroc"]  # F1 at 0.5: all-positive scores well
    assert learnt > 0.65, learnt  # the source learnt something (random scores give 0.5)
    assert scores["warm"] == pytest.approx(learnt, abs=0.01), (learnt, scores)
    assert scores["cold"] < learnt - 0.08, (learnt, scores)


def test_another_architecture_is_refused_with_the_fix(source, tiny_encoder):
    checkpoint, _, _ = source
    net = classifier(tiny_encoder("distilbert"), labels=LabelSpace("multilabel", ("joy",)), max_length=64)
    with pytest.raises(ConfigError, match=r"init_from=.*is not the architecture of model.name_or_path=.*Set "
                                          r"model.name_or_path to the source's base model"):
        warm_start(net, checkpoint)


def test_a_missing_or_broken_source_names_init_from(tmp_path, tiny_bert):
    net = classifier(tiny_bert, labels=LabelSpace("multilabel", ("joy",)), max_length=64)
    with pytest.raises(ConfigError, match=r"^init_from=.*nowhere.ckpt: no such file or directory"):
        warm_start(net, tmp_path / "nowhere.ckpt")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"^init_from=.*broken.ckpt: cannot be read as a checkpoint"):
        warm_start(net, broken)


def test_a_missing_source_fails_before_the_data_is_read(tmp_path, tiny_bert):
    data = {split: tmp_path / f"absent-{split}.jsonl" for split in ("train", "val", "test")}  # would fail too
    cfg = compose_train(tmp_path, quick(tiny_bert, data, *NO_EXTRAS, f"init_from={tmp_path / 'nowhere.ckpt'}"))
    with pytest.raises(ConfigError, match=r"^init_from=.*nowhere.ckpt: no such file or directory"):
        entry.train(cfg)
