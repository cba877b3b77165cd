"""The prediction engine: length-sorted batches, results back in input order, same scores as a plain forward."""

from __future__ import annotations

import torch

from src.inference import Predictor
from src.labels import LabelSpace
from src.models.build import classifier
from src.pretrained import load_tokenizer

TEXTS = ["short", "a much longer text with many more tokens than the others in here", "", "mid length text here"]


def test_scores_come_back_in_input_order(tiny_bert):
    space = LabelSpace("multilabel", ("a", "b", "c"))
    predictor = Predictor(classifier(tiny_bert, labels=space, max_length=32).eval(), load_tokenizer(tiny_bert), {})
    got = predictor.scores(TEXTS, batch_size=2, precision="32-true")
    with torch.no_grad():
        for row, text in enumerate(TEXTS):  # one text at a time: no padding, no reordering
            encoded = predictor.tokenizer([text], truncation=True, max_length=32, return_tensors="pt")
            expected = space.scores(predictor.net(encoded["input_ids"], encoded["attention_mask"]).logits)[0]
            torch.testing.assert_close(torch.from_numpy(got[row]), expected, atol=1e-5, rtol=1e-4)


def test_threshold_override_is_refused_for_a_multiclass_model(tiny_bert):
    import pytest

    from src.errors import ConfigError

    space = LabelSpace("multiclass", ("a", "b", "c"))
    predictor = Predictor(classifier(tiny_bert, labels=space, max_length=32).eval(), load_tokenizer(tiny_bert), {})
    with pytest.raises(ConfigError, match="multi-label models only"):
        predictor.use_thresholds(0.3)
