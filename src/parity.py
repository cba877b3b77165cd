"""An export must reproduce the checkpoint: its logits on a few texts of different lengths (so padding and masking are
exercised) are compared with the model's own, and a mismatch fails the export before anything is written."""

from __future__ import annotations

import sys

import numpy as np
import torch

from src.data.batching import PadCollator
from src.data.token_cache import tokenize
from src.errors import LabelwiseError
from src.inference import Predictor

PARITY_TEXTS = (
    "I can't believe how wonderful this day turned out!",
    "ok",
    "This is the most unfair, rude and infuriating thing anyone has said to me, and I am still shaking with anger.",
    "Not sure how I feel about it.",
)


class ParityError(LabelwiseError):
    """The exported model does not reproduce the checkpoint's logits."""


def parity_batch(predictor: Predictor) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """A padded batch of :data:`PARITY_TEXTS` and our model's fp32 logits on it; for a hierarchical model the texts
    and one several windows long, as windows ``[B, K, L]`` (documents with fewer windows padded)."""
    chunking = predictor.net.config.chunking
    if chunking:
        texts = [*PARITY_TEXTS, " ".join(PARITY_TEXTS * 4 * chunking["max_chunks"])]
        ids = tokenize(predictor.tokenizer, texts, predictor.max_length, stride=chunking["stride"],
                       max_chunks=chunking["max_chunks"])
        batch = PadCollator(predictor.tokenizer.pad_token_id).pad(ids)
    else:
        batch = predictor.tokenizer(list(PARITY_TEXTS), padding=True, truncation=True,
                                    max_length=predictor.max_length, return_tensors="pt")
    batch = {key: batch[key] for key in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        logits = predictor.net.float().cpu().eval()(**batch).logits.numpy()
    return batch, logits


def check_parity(name: str, exported: np.ndarray, reference: np.ndarray, tolerance: float) -> float:
    diff = float(np.abs(np.asarray(exported, dtype=np.float64) - reference).max())
    print(f"parity ({name}): max |logit difference| = {diff:.2e} on {len(reference)} texts (tolerance {tolerance:g})",
          file=sys.stderr)
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"the {name} export disagrees with the checkpoint (max |logit difference| {diff:.3g} > {tolerance:g}); "
            "nothing was written. Please report this with the model name."
        )
    return diff
