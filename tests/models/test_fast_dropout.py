"""The cheap CPU dropout: dropout's distribution and gradient, an attention equal to SDPA, and a model that
still loads, saves and evaluates as the plain Hugging Face one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import AutoModel

from src.errors import ConfigError
from src.labels import LabelSpace
from src.models.build import classifier
from src.models.fast_dropout import ATTENTION, FastDropout, attention, fast_dropout, keep_mask, quantised


def binomial_bound(n: int, p: float) -> float:
    """Six standard deviations of a kept fraction over ``n`` draws: a correct mask fails about 1 in 10**9."""
    return 6 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_each_of_the_four_int16_lanes_keeps_at_the_requested_rate(p):
    """Every 64-bit draw feeds four mask entries; a lane taken from a biased bit (int64 ``random_()`` leaves
    the sign bit 0) would keep at rate 1 or 0, so each lane is checked on its own."""
    torch.manual_seed(0)
    lanes = keep_mask((250_000, 4), p).float()
    for lane in lanes.T:
        assert abs(lane.mean().item() - (1 - quantised(p))) < binomial_bound(len(lane), p)


def test_quantised_probability_is_within_one_level():
    assert quantised(0.1) == round(0.1 * 65536) / 65536
    assert abs(quantised(0.1) - 0.1) <= 2**-17
    assert quantised(0.0) == 0.0


def test_outputs_are_zero_or_scaled_and_the_gradient_is_the_same_mask():
    torch.manual_seed(1)
    x = (torch.rand(64, 48) + 0.5).requires_grad_()  # no zeros, so a zero output means dropped
    out = fast_dropout(x, 0.3)
    scale = 1 / (1 - quantised(0.3))
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] * scale)
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() * scale)


def test_expectation_is_the_input():
    torch.manual_seed(2)
    x = torch.randn(8, 16)
    mean = torch.stack([fast_dropout(x, 0.2) for _ in range(4000)]).mean(0)
    # each entry: mean of 4000 draws of x * Bernoulli(0.8) / 0.8, standard deviation |x| * 0.5 / sqrt(4000)
    assert ((mean - x).abs() <= 6 * x.abs() * 0.5 / math.sqrt(4000) + 1e-6).all()


def test_same_seed_same_mask_and_identity_when_not_training():
    x = torch.randn(4, 32)
    torch.manual_seed(3)
    first = fast_dropout(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(first, fast_dropout(x, 0.1))
    assert fast_dropout(x, 0.1, training=False) is x
    assert fast_dropout(x, 0.0) is x
    module = FastDropout(0.5).eval()
    assert module(x) is x


def qkv(padding: bool):
    torch.manual_seed(4)
    query, key, value = (torch.randn(3, 2, 7, 8) for _ in range(3))
    mask = None
    if padding:
        lengths = torch.tensor([7, 4, 2])
        mask = (torch.arange(7)[None, :] < lengths[:, None])[:, None, None, :].expand(3, 1, 7, 7)
    return query, key, value, mask


@pytest.mark.parametrize("padding", [False, True])
def test_attention_with_dropout_is_sdpa_math_with_the_drawn_mask(padding):
    query, key, value, mask = qkv(padding)
    module = nn.Module()
    module.is_causal = False
    torch.manual_seed(5)
    ours, _ = attention(module, query, key, value, mask, dropout=0.25, scaling=0.3)
    torch.manual_seed(5)
    keep = keep_mask((3, 2, 7, 7), 0.25)
    scores = query @ key.transpose(2, 3) * 0.3
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1) * keep / (1 - quantised(0.25))
    torch.testing.assert_close(ours, (probs @ value).transpose(1, 2))


@pytest.mark.parametrize("padding", [False, True])
def test_attention_without_dropout_is_torch_sdpa(padding):
    query, key, value, mask = qkv(padding)
    module = nn.Module()
    module.is_causal = False
    ours, _ = attention(module, query, key, value, mask, dropout=0.0, scaling=0.3)
    reference = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(ours, reference.transpose(1, 2))


ABC = LabelSpace("multilabel", ("a", "b", "c"))


def test_classifier_uses_it_and_matches_plain_hugging_face_in_eval(tiny_bert):
    model = classifier(tiny_bert, labels=ABC)
    assert not [m for m in model.modules() if type(m) is nn.Dropout]
    assert model.encoder.config._attn_implementation == ATTENTION
    plain = AutoModel.from_pretrained(tiny_bert)
    assert plain.config._attn_implementation == "sdpa"
    assert model.encoder.state_dict().keys() == {k for k in plain.state_dict() if "pooler" not in k}
    ids = torch.tensor([[101, 2054, 2003, 102, 0], [101, 7592, 102, 0, 0]])
    mask = (ids != 0).long()
    model.eval()
    ours = model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours, plain(input_ids=ids, attention_mask=mask).last_hidden_state)
    model.train()
    torch.manual_seed(6)
    first = model(ids, mask).logits
    torch.manual_seed(6)
    assert torch.equal(first, model(ids, mask).logits)
    assert not torch.equal(first, model(ids, mask).logits)  # dropout is on in training


def test_saved_config_names_standard_attention(tiny_bert, tmp_path):
    """An encoder saved from a trained classifier loads anywhere: the custom attention is not written out."""
    model = classifier(tiny_bert, labels=ABC)
    model.encoder.save_pretrained(tmp_path)
    assert ATTENTION not in (tmp_path / "config.json").read_text()


def test_it_can_be_switched_off(tiny_bert):
    model = classifier(tiny_bert, labels=ABC, fast_dropout=False)
    assert not [m for m in model.modules() if isinstance(m, FastDropout)]
    assert model.encoder.config._attn_implementation == "sdpa"
    with pytest.raises(ConfigError, match="model.fast_dropout is true or false, got 'maybe'"):
        classifier(tiny_bert, labels=ABC, fast_dropout="maybe")
