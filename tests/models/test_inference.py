"""The prediction engine: length-sorted batches, results back in input order, same scores as a plain forward."""

from __future__ import annotations

import torch

from src.metrics.classification import scores
from src.models.classifier import TextClassifier
from src.models.inference import predict_scores
from src.models.pretrained import load_tokenizer

TEXTS = ["short", "a much longer text with many more tokens than the others in here", "", "mid length text here"]


def test_scores_come_back_in_input_order(tiny_bert):
    torch.manual_seed(0)
    model = TextClassifier(tiny_bert, num_labels=3, task="multilabel", label_names=["a", "b", "c"]).eval()
    tokenizer = load_tokenizer(tiny_bert)
    got = predict_scores(model, tokenizer, TEXTS, max_length=32, batch_size=2, precision="32-true")
    with torch.no_grad():
        for row, text in enumerate(TEXTS):  # one text at a time: no padding, no reordering
            encoded = tokenizer([text], truncation=True, max_length=32, return_tensors="pt")
            expected = scores(model(encoded["input_ids"], encoded["attention_mask"]), "multilabel")[0]
            torch.testing.assert_close(torch.from_numpy(got[row]), expected, atol=1e-5, rtol=1e-4)
