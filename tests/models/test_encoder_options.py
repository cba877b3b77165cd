"""Encoder options of ``model=``: gradient checkpointing, overrides of the encoder's own config."""

from __future__ import annotations

import pytest
import torch

from src.errors import ConfigError
from src.labels import LabelSpace
from src.models.build import classifier

LABELS = LabelSpace("multilabel", ("joy", "anger", "fear"), (5, 3, 1), 8)
NO_DROPOUT = {"bert": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
              "roberta": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
              "deberta-v2": {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
              "distilbert": {"dropout": 0.0, "attention_dropout": 0.0}}


def gradients(net) -> dict[str, torch.Tensor]:
    input_ids = torch.tensor([[2, 11, 18, 6, 8, 9, 3], [2, 11, 7, 3, 0, 0, 0]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    net.zero_grad()
    logits = net(input_ids, (input_ids != 0).long()).logits
    torch.nn.functional.binary_cross_entropy_with_logits(logits, targets).backward()
    return {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model_type", list(NO_DROPOUT))
def test_gradient_checkpointing_gives_the_plain_gradients(tiny_encoder, model_type):
    directory = tiny_encoder(model_type)
    torch.manual_seed(0)
    plain = classifier(directory, labels=LABELS, pooling="cls", dropout=0.0,
                       encoder_overrides=NO_DROPOUT[model_type])
    torch.manual_seed(0)
    checkpointed = classifier(directory, labels=LABELS, pooling="cls", dropout=0.0, gradient_checkpointing=True,
                              encoder_overrides=NO_DROPOUT[model_type])
    assert checkpointed.encoder.is_activation_checkpointing and not plain.encoder.is_activation_checkpointing
    assert checkpointed.encoder.training
    expected, got = gradients(plain), gradients(checkpointed)
    assert set(got) == set(expected) and len(got) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_recomputes_the_layers_in_the_backward_pass(tiny_encoder):
    """Counted by a forward hook inside the first layer: twice per step with checkpointing, once without."""
    for enabled, calls in ((False, 1), (True, 2)):
        net = classifier(tiny_encoder("bert"), labels=LABELS, gradient_checkpointing=enabled)
        seen = []
        net.encoder.encoder.layer[0].attention.register_forward_hook(lambda *_, seen=seen: seen.append(1))
        gradients(net)
        assert len(seen) == calls


def test_encoder_overrides_reach_the_encoder_and_its_stored_config(tiny_encoder):
    net = classifier(tiny_encoder("deberta-v2"), labels=LABELS, pooling="cls",
                     encoder_overrides={"hidden_dropout_prob": 0.3, "attention_probs_dropout_prob": 0.25})
    assert net.encoder.config.hidden_dropout_prob == 0.3
    assert net.config.encoder.attention_probs_dropout_prob == 0.25
    assert net.encoder.embeddings.dropout.p == 0.3
    distil = classifier(tiny_encoder("distilbert"), labels=LABELS, pooling="cls",
                        encoder_overrides=NO_DROPOUT["distilbert"])
    assert all(m.p == 0.0 for m in distil.encoder.modules() if isinstance(m, torch.nn.Dropout))


def test_an_override_the_encoder_config_lacks_is_one_clear_message(tiny_encoder):
    with pytest.raises(ConfigError, match=r"model.encoder_overrides.hidden_dropout_prob: distilbert encoder configs "
                                          r"have no key 'hidden_dropout_prob'; close valid keys: .*dropout"):
        classifier(tiny_encoder("distilbert"), labels=LABELS, pooling="cls",
                   encoder_overrides={"hidden_dropout_prob": 0.2})
    with pytest.raises(ConfigError, match="model.gradient_checkpointing is true or false"):
        classifier(tiny_encoder("bert"), labels=LABELS, gradient_checkpointing="yes")


def test_the_documented_command_line_override_composes(tmp_path):
    """README's ``'model.encoder_overrides={hidden_dropout_prob: 0.2, ...}'``: an empty mapping as the default refused
    it (a struct config takes no new keys), so the default is null."""
    from tests.helpers import compose_train

    override = "model.encoder_overrides={hidden_dropout_prob: 0.2, attention_probs_dropout_prob: 0.1}"
    cfg = compose_train(tmp_path, [override])
    assert dict(cfg.model.encoder_overrides) == {"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.1}
