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
    if not texts:  # the tokenizer refuses an empty batch
        return []
    path = Path(cache_dir) / f"{cache_key(tokenizer, texts, max_length)}.npz" if cache_dir else None
    if path is not None and path.is_file():
        stored = np.load(path)
        return np.split(stored["ids"], stored["offsets"][1:-1])
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    arrays = [np.asarray(row, dtype=np.int32) for row in ids]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(row) for row in arrays])
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")  # atomic: concurrent jobs may write the same key
        np.savez(partial, ids=np.concatenate(arrays), offsets=offsets)
        partial.replace(path)
        log.info(f"tokenised {len(texts):,} texts; cached in {path}")
    return arrays
