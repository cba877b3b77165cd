"""Scoring texts with a trained classifier: length-sorted batches, autocast, results in input order."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
import torch

from src.data.batching import PadCollator, sorted_batches
from src.data.token_cache import tokenize
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
    return score_token_ids(model, tokenize(tokenizer, texts, max_length), tokenizer.pad_token_id, batch_size, precision)


@torch.inference_mode()
def map_sorted_batches(function: Callable[[dict[str, torch.Tensor]], torch.Tensor], ids: list[np.ndarray],
                       pad_token_id: int, batch_size: int, width: int, device: torch.device,
                       precision: str) -> np.ndarray:
    """``function`` over padded batches of token ids (on ``device``, under ``precision``'s autocast), batched by
    length; rows of width ``width`` returned as float32 in input order."""
    collate = PadCollator(pad_token_id, pad_multiple())
    out = np.zeros((len(ids), width), dtype=np.float32)
    with autocast_for(device, precision):
        for batch in sorted_batches([len(row) for row in ids], batch_size):
            padded = {key: value.to(device) for key, value in collate.pad([ids[i] for i in batch]).items()}
            out[batch] = function(padded).float().cpu().numpy()
    return out


def score_token_ids(model, ids: list[np.ndarray], pad_token_id: int, batch_size: int = 128,
                    precision: str | None = None) -> np.ndarray:
    """Probabilities for already tokenised texts, scored in length-sorted batches, returned in input order."""
    model.eval()
    return map_sorted_batches(lambda padded: scores(model(**padded), model.hparams.task), ids, pad_token_id,
                              batch_size, model.hparams.num_labels, next(model.parameters()).device,
                              precision or fast_precision())
