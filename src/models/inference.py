"""Scoring texts with a trained classifier: length-sorted batches, autocast, results in input order."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from src.data.batching import sorted_batches
from src.data.datamodule import PadCollator
from src.metrics.classification import scores
from src.runtime import fast_precision, pad_multiple


def autocast_for(device: torch.device, precision: str):
    """An autocast context matching a Lightning precision string (``bf16-mixed``, ``16-mixed``, ``32-true``)."""
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def predict_scores(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 128,
                   precision: str | None = None) -> np.ndarray:
    """``[len(texts), num_labels]`` probabilities (sigmoid for multi-label, softmax for multi-class)."""
    ids = [np.asarray(row) for row in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    return score_token_ids(model, ids, tokenizer.pad_token_id, batch_size, precision)


@torch.inference_mode()
def score_token_ids(model, ids: list[np.ndarray], pad_token_id: int, batch_size: int = 128,
                    precision: str | None = None) -> np.ndarray:
    """Probabilities for already tokenised texts, scored in length-sorted batches, returned in input order."""
    model.eval()
    device = next(model.parameters()).device
    collate = PadCollator(pad_token_id, pad_multiple())
    out = np.zeros((len(ids), model.hparams.num_labels), dtype=np.float32)
    with autocast_for(device, precision or fast_precision()):
        for batch in sorted_batches([len(row) for row in ids], batch_size):
            padded = collate.pad([ids[i] for i in batch])
            logits = model(padded["input_ids"].to(device), padded["attention_mask"].to(device))
            out[batch] = scores(logits, model.hparams.task).cpu().numpy()
    return out
