"""The model artifact: building it, its heads and pooling, its config, and rebuilding it from what it stored."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification

from src.errors import ConfigError
from src.labels import LabelSpace
from src.models.build import classifier, from_stored, labels_of
from src.models.modeling_labelwise import LabelwiseConfig, LabelwiseForSequenceClassification
from src.models.optimization import adamw

LABELS = LabelSpace("multilabel", ("joy", "anger", "fear"), (5, 3, 1), 8)


def batch():
    input_ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 7592, 102, 0, 0, 0]])
    return input_ids, (input_ids != 0).long()


@pytest.mark.parametrize("pooling", ["mean", "cls", "cls_mean", "pooler"])
def test_forward_gives_batch_by_labels_for_every_pooling(tiny_bert, pooling):
    net = classifier(tiny_bert, labels=LABELS, pooling=pooling).eval()
    hidden = net.encoder.config.hidden_size
    assert net.head.out_proj.in_features == (2 * hidden if pooling == "cls_mean" else hidden)
    assert net.head.out_proj.out_features == 3 and net.head.dense is None
    assert (net.encoder.pooler is None) == (pooling != "pooler")  # unused weights would break DDP
    with torch.no_grad():
        logits = net(*batch()).logits
        from_embeddings = net(embeddings=net.embed(*batch())).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, from_embeddings)


def test_mean_pooling_is_unaffected_by_extra_padding(tiny_bert):
    net = classifier(tiny_bert, labels=LABELS).eval()
    input_ids, mask = batch()
    padded_ids = torch.cat([input_ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short = net(input_ids, mask).logits
        long = net(padded_ids, padded_mask).logits
        second_alone = net(input_ids[1:, :3], mask[1:, :3]).logits
    torch.testing.assert_close(short, long, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short[1:], second_alone, atol=1e-5, rtol=1e-5)


def test_bad_model_options_are_one_clear_message(tiny_bert):
    with pytest.raises(ConfigError, match="model.pooling must be one of"):
        classifier(tiny_bert, labels=LABELS, pooling="max")
    with pytest.raises(ConfigError, match="model.hidden is the hidden layer width"):
        classifier(tiny_bert, labels=LABELS, hidden=-1)
    with pytest.raises(ConfigError, match="model.freeze_encoder is true or false, got 'yes'"):
        classifier(tiny_bert, labels=LABELS, freeze_encoder="yes")


def test_building_keeps_the_pretrained_encoder_and_initialises_the_head_like_torch(tiny_bert):
    """Reproducible runs: the encoder's weights are the checkpoint's, and the head draws from the RNG exactly as a
    plain nn.Linear would (the model's own weight init leaves both alone)."""
    reference = AutoModel.from_pretrained(tiny_bert).state_dict()
    torch.manual_seed(3)
    net = classifier(tiny_bert, labels=LABELS, fast_dropout=False)
    torch.manual_seed(3)
    AutoModel.from_pretrained(tiny_bert)
    plain = torch.nn.Linear(32, 3)
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert torch.equal(net.head.out_proj.weight, plain.weight) and torch.equal(net.head.out_proj.bias, plain.bias)


def test_a_hidden_head_and_a_frozen_encoder(tiny_bert):
    net = classifier(tiny_bert, labels=LABELS, hidden=8, freeze_encoder=True)
    assert (net.head.dense.in_features, net.head.dense.out_features, net.head.out_proj.in_features) == (32, 8, 8)
    assert not any(p.requires_grad for p in net.encoder.parameters())
    optimizer = adamw(encoder=net.encoder, head=net.head, lr=1e-2)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in net.head.parameters()}
    assert net(embeddings=torch.randn(5, 32)).logits.shape == (5, 3)


def test_the_config_carries_labels_thresholds_and_hugging_face_fields(tiny_bert):
    net = classifier(tiny_bert, labels=LABELS, max_length=48)
    config = net.config
    assert labels_of(config) == LABELS
    assert config.id2label == {0: "joy", 1: "anger", 2: "fear"} and config.problem_type == "multi_label_classification"
    assert (config.base_model, config.max_seq_length, config.thresholds) == (tiny_bert, 48, None)
    multiclass = classifier(tiny_bert, labels=LabelSpace("multiclass", ("a", "b"))).config
    assert multiclass.problem_type == "single_label_classification" and multiclass.num_labels == 2


def test_from_stored_rebuilds_the_same_model_and_names_missing_weights(tiny_bert):
    net = classifier(tiny_bert, labels=LABELS, hidden=4).eval()
    net.config.thresholds = {"global_threshold": 0.4, "per_label": [0.3, 0.4, 0.5], "shrinkage": -1.0,
                             "at_least_one": False}
    rebuilt = from_stored(net.config.to_dict(), net.state_dict())
    assert not rebuilt.training and rebuilt.config.thresholds == net.config.thresholds
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*batch()).logits, net(*batch()).logits)
    state = {key: value for key, value in net.state_dict().items() if not key.startswith("head.dense")}
    with pytest.raises(ConfigError, match="missing.*head.dense"):
        from_stored(net.config.to_dict(), state)


def test_save_pretrained_round_trip_through_auto_classes(tiny_bert, tmp_path):
    """The class that trains is the class that ships: its own save_pretrained, loaded with Hugging Face's auto
    classes and the modeling file saved beside it (trust_remote_code), gives the same logits."""
    net = classifier(tiny_bert, labels=LABELS, hidden=4).eval()
    type(net.config).register_for_auto_class()
    type(net).register_for_auto_class("AutoModelForSequenceClassification")
    net.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_labelwise.py").is_file()
    assert "labelwise_sdpa" not in (tmp_path / "config.json").read_text()  # training-time attention stays home
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert type(loaded).__name__ == "LabelwiseForSequenceClassification" and loaded.config.head_hidden == 4
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch()).logits, net(*batch()).logits)


def test_unknown_pooling_in_a_stored_config_is_refused():
    with pytest.raises(ValueError, match="pooling must be one of"):
        LabelwiseForSequenceClassification(LabelwiseConfig(encoder={"model_type": "bert", "hidden_size": 8,
                                                                    "num_attention_heads": 2,
                                                                    "intermediate_size": 8,
                                                                    "num_hidden_layers": 1},
                                                           pooling="max", num_labels=2))
