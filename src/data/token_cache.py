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


def cache_key(tokenizer, texts: list[str], max_length: int, stride: int = 0, max_chunks: int = 1) -> str:
    # the whole tokenizer definition (vocabulary, normaliser, special tokens) minus the truncation/padding
    # state that each call leaves behind
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode())
    digest.update(f"max_length={max_length}".encode())
    if max_chunks > 1:
        digest.update(f"stride={stride},max_chunks={max_chunks}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def tokenize(tokenizer, texts: list[str], max_length: int, cache_dir: str | Path | None = None, stride: int = 0,
             max_chunks: int = 1) -> list:
    """Token ids per text (with special tokens, truncated to ``max_length``, unpadded); with ``max_chunks > 1`` a
    list of windows per text (:func:`tokenize_with_lengths`)."""
    return tokenize_with_lengths(tokenizer, texts, max_length, cache_dir, stride, max_chunks)[0]


def tokenize_with_lengths(tokenizer, texts: list[str], max_length: int, cache_dir: str | Path | None = None,
                          stride: int = 0, max_chunks: int = 1) -> tuple[list, np.ndarray, np.ndarray]:
    """Token ids per text as :func:`tokenize`, each text's length before truncation and the tokens of it the ids
    cover (so truncation can be reported), in one pass: a fast tokenizer returns a long text's overflow as further
    windows, each with its own special tokens and repeating the ``stride`` tokens before it, so the full length is
    the windows' total less the repeats.

    ``max_chunks > 1`` (a hierarchical model): each text is a list of up to ``max_chunks`` such windows (int32
    arrays), the windows an exported model's pipeline makes too (``LabelwisePipeline`` in
    src/models/modeling_labelwise.py)."""
    if not texts:  # the tokenizer refuses an empty batch
        return [], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    path = Path(cache_dir) / f"{cache_key(tokenizer, texts, max_length, stride, max_chunks)}.npz" if cache_dir \
        else None
    if path is not None and path.is_file():
        stored = np.load(path)
        if "covered" in stored:  # caches written before coverage was kept are rebuilt
            windows = np.split(stored["ids"], stored["offsets"][1:-1])
            return (nest(windows, stored["chunks"]) if max_chunks > 1 else windows), stored["lengths"], \
                stored["covered"]
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True,
                        stride=stride)
    repeated = tokenizer.num_special_tokens_to_add(pair=False) + stride
    kept: list[list[np.ndarray]] = [[] for _ in texts]
    lengths = np.zeros(len(texts), dtype=np.int64)
    covered = np.zeros(len(texts), dtype=np.int64)
    for window, text in zip(encoded["input_ids"], encoded["overflow_to_sample_mapping"]):
        new = len(window) - (repeated if lengths[text] else 0)
        lengths[text] += new
        if len(kept[text]) < max_chunks:
            kept[text].append(np.asarray(window, dtype=np.int32))
            covered[text] += new
    windows = [window for text in kept for window in text]
    chunks = np.array([len(text) for text in kept], dtype=np.int64)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(row) for row in windows])
        partial = path.with_suffix(f".{os.getpid()}.tmp.npz")  # atomic: concurrent jobs may write the same key
        np.savez(partial, ids=np.concatenate(windows), offsets=offsets, chunks=chunks, lengths=lengths,
                 covered=covered)
        partial.replace(path)
        log.info(f"tokenised {len(texts):,} texts; cached in {path}")
    return (nest(windows, chunks) if max_chunks > 1 else windows), lengths, covered


def nest(windows: list[np.ndarray], chunks: np.ndarray) -> list[list[np.ndarray]]:
    """Flat windows regrouped per text (``chunks[i]`` windows for text i)."""
    ends = np.cumsum(chunks)
    return [windows[end - count : end] for end, count in zip(ends, chunks)]
