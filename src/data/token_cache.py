"""Tokenise once: token ids cached on disk, keyed by the tokenizer, max length and the texts themselves.

A second run with the same data and tokenizer loads the ids instead of tokenising; any change to the texts
(an edited file), the tokenizer or ``max_length`` gives a different key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def cache_key(tokenizer, texts: list[str], max_length: int) -> str:
    # the whole tokenizer definition (vocabulary, normaliser, special tokens) minus the truncation/padding
    # state that each call leaves behind
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode())
    digest.update(f"max_length={max_length}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def tokenize(tokenizer, texts: list[str], max_length: int, cache_dir: str | Path | None = None) -> list[np.ndarray]:
    """Token ids per text (with special tokens, truncated to ``max_length``, unpadded)."""
    return tokenize_with_lengths(tokenizer, texts, max_length, cache_dir)[0]


def tokenize_with_lengths(tokenizer, texts: list[str], max_length: int, cache_dir: str | Path | None = None
                          ) -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids per text as :func:`tokenize`, and each text's length before truncation (so truncation can be
    reported), in one pass: a fast tokenizer returns a long text's overflow as further windows (stride 0), each
    with its own special tokens, so the full length is the windows' total less the repeated specials."""
    if not texts:  # the tokenizer refuses an empty batch
        return [], np.zeros(0, dtype=np.int64)
    path = Path(cache_dir) / f"{cache_key(tokenizer, texts, max_length)}.npz" if cache_dir else None
    if path is not None and path.is_file():
        stored = np.load(path)
        if "lengths" in stored:  # caches written before lengths were kept are rebuilt
            return np.split(stored["ids"], stored["offsets"][1:-1]), stored["lengths"]
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True, stride=0)
    specials = tokenizer.num_special_tokens_to_add(pair=False)
    arrays: list[np.ndarray | None] = [None] * len(texts)
    lengths = np.zeros(len(texts), dtype=np.int64)
    for window, text in zip(encoded["input_ids"], encoded["overflow_to_sample_mapping"]):
        if arrays[text] is None:  # the first window is the truncated text
            arrays[text] = np.asarray(window, dtype=np.int32)
            lengths[text] = len(window)
        else:
            lengths[text] += len(window) - specials
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(row) for row in arrays])
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")  # atomic: concurrent jobs may write the same key
        np.savez(partial, ids=np.concatenate(arrays), offsets=offsets, lengths=lengths)
        partial.replace(path)
        log.info(f"tokenised {len(texts):,} texts; cached in {path}")
    return arrays, lengths
