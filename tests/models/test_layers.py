"""Depth-aware training: layer-wise learning-rate decay, freezing the lowest layers, gradual unfreezing."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from src.errors import ConfigError
from src.labels import LabelSpace
from src.models.build import classifier
from src.models.optimization import adamw
from src.train import train
from tests.helpers import QUIET, compose_train, on_tiny, write_dataset

LABELS = LabelSpace("multilabel", ("joy", "anger", "fear"), (5, 3, 1), 8)
# By hand, for 2 layers, lr 1, layer_decay 0.5, head_lr_multiplier 10: top layer 1, the one below 0.5, embeddings
# 0.25; (lr, weight decay) of named parameters, biases and LayerNorm weights without decay
EXPECTED = {
    "bert": {"embeddings.word_embeddings.weight": (0.25, 0.01), "embeddings.LayerNorm.weight": (0.25, 0.0),
             "encoder.layer.0.attention.self.query.weight": (0.5, 0.01),
             "encoder.layer.0.output.dense.bias": (0.5, 0.0),
             "encoder.layer.1.attention.self.value.weight": (1.0, 0.01),
             "encoder.layer.1.output.LayerNorm.weight": (1.0, 0.0),
             "pooler.dense.weight": (1.0, 0.01)},
    "roberta": {"embeddings.position_embeddings.weight": (0.25, 0.01),
                "encoder.layer.0.intermediate.dense.weight": (0.5, 0.01),
                "encoder.layer.1.attention.output.LayerNorm.bias": (1.0, 0.0), "pooler.dense.bias": (1.0, 0.0)},
    "distilbert": {"embeddings.word_embeddings.weight": (0.25, 0.01),
                   "transformer.layer.0.attention.q_lin.weight": (0.5, 0.01),
                   "transformer.layer.1.ffn.lin2.weight": (1.0, 0.01),
                   "transformer.layer.1.output_layer_norm.weight": (1.0, 0.0)},
    "deberta-v2": {"embeddings.word_embeddings.weight": (0.25, 0.01),
                   "encoder.rel_embeddings.weight": (0.25, 0.01), "encoder.LayerNorm.weight": (0.25, 0.0),
                   "encoder.layer.0.attention.self.query_proj.weight": (0.5, 0.01),
                   "encoder.layer.1.attention.self.value_proj.bias": (1.0, 0.0)},
}


def settings(optimizer) -> dict[int, tuple[float, float]]:
    return {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("model_type", list(EXPECTED))
def test_layer_decay_learning_rates_by_hand(tiny_encoder, model_type):
    pooling = "pooler" if model_type in ("bert", "roberta") else "cls"
    net = classifier(tiny_encoder(model_type), labels=LABELS, pooling=pooling)
    optimizer = adamw(encoder=net.encoder, head=net.head, lr=1.0, head_lr_multiplier=10.0, layer_decay=0.5)
    got = settings(optimizer)
    named = dict(net.encoder.named_parameters())
    for name, expected in EXPECTED[model_type].items():
        assert got[id(named[name])] == pytest.approx(expected), name
    assert got[id(net.head.out_proj.weight)] == pytest.approx((10.0, 0.01))
    assert got[id(net.head.out_proj.bias)] == pytest.approx((10.0, 0.0))
    assert len(got) == sum(1 for _ in net.parameters())  # every parameter in exactly one group
    assert sorted({lr for lr, _ in got.values()}) == pytest.approx([0.25, 0.5, 1.0, 10.0])
    plain = settings(adamw(encoder=net.encoder, head=net.head, lr=1.0, head_lr_multiplier=10.0))
    assert {lr for lr, _ in plain.values()} == {1.0, 10.0}


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, True, "0.9"])
def test_layer_decay_outside_zero_one_is_one_clear_message(tiny_bert, bad):
    net = classifier(tiny_bert, labels=LABELS)
    with pytest.raises(ConfigError, match=r"optim.layer_decay must be in \(0, 1\]"):
        adamw(encoder=net.encoder, head=net.head, lr=1.0, layer_decay=bad)


def trainable(net) -> set[str]:
    return {name for name, p in net.encoder.named_parameters() if p.requires_grad}


def test_freeze_layers_freezes_the_embeddings_and_the_lowest_layers(tiny_encoder):
    bert = classifier(tiny_encoder("bert"), labels=LABELS, freeze_layers=1)
    names = [name for name, _ in bert.encoder.named_parameters()]
    assert trainable(bert) == {name for name in names if name.startswith("encoder.layer.1.")}
    deberta = classifier(tiny_encoder("deberta-v2"), labels=LABELS, pooling="cls", freeze_layers=0)
    frozen = {name for name, _ in deberta.encoder.named_parameters()} - trainable(deberta)
    assert frozen == {name for name, _ in deberta.encoder.named_parameters()
                      if name.startswith(("embeddings.", "encoder.rel_embeddings.", "encoder.LayerNorm."))}
    distil = classifier(tiny_encoder("distilbert"), labels=LABELS, pooling="cls", freeze_layers=2)
    assert trainable(distil) == set() and all(p.requires_grad for p in distil.head.parameters())


@pytest.mark.parametrize("bad", [3, -1, "2"])
def test_freezing_more_layers_than_the_model_has_is_one_clear_message(tiny_bert, bad):
    with pytest.raises(ConfigError, match=r"model.freeze_layers=.*: this bert encoder has 2 layers; pass 0..2"):
        classifier(tiny_bert, labels=LABELS, freeze_layers=bad)


PROBES = {"top": "encoder.layer.1.attention.self.query.weight", "below": "encoder.layer.0.output.dense.weight",
          "embeddings": "embeddings.word_embeddings.weight"}


class Probe(L.Callback):
    """Per epoch: which probed parameters require grad, and which changed during the epoch."""

    def __init__(self):
        self.trainable, self.changed, self.before = [], [], {}

    def parameters(self, pl_module):
        named = dict(pl_module.net.encoder.named_parameters())
        return {key: named[name] for key, name in PROBES.items()}

    def on_train_epoch_start(self, trainer, pl_module):
        probes = self.parameters(pl_module)
        self.trainable.append({key for key, p in probes.items() if p.requires_grad})
        self.before = {key: p.detach().clone() for key, p in probes.items()}

    def on_train_epoch_end(self, trainer, pl_module):
        probes = self.parameters(pl_module)
        self.changed.append({key for key, p in probes.items() if not torch.equal(p, self.before[key])})


def test_gradual_unfreezing_thaws_one_group_per_epoch_from_the_top(tmp_path, tiny_bert):
    paths = write_dataset(tmp_path, multilabel=True, rows=32)
    cfg = compose_train(tmp_path, [*on_tiny(tiny_bert, paths), *QUIET, "logger=none", "report=false", "test=false",
                                   "callbacks.progress_bar=null", "callbacks.early_stopping=null",
                                   "trainer.max_epochs=4", "optim.lr=1e-2", "data.batch_size=16",
                                   "callbacks.gradual_unfreezing={_target_: src.callbacks.unfreezing.GradualUnfreezing,"
                                   " every_n_epochs: 1}"])
    probe = Probe()
    train(cfg, extra_callbacks=[probe])
    expected = [set(), {"top"}, {"top", "below"}, {"top", "below", "embeddings"}]
    assert probe.trainable == expected
    assert probe.changed == expected  # the optimizer updates what thawed, and nothing frozen moves
