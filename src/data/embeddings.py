"""``data.features=embeddings``: every split encoded once by the model's frozen encoder into pooled embeddings, so a
linear probe trains its head in seconds per epoch.

Embeddings are cached on disk (one ``.npy`` per split) under a key of the token-cache key (tokenizer, max length,
texts), the encoder's weights (its resolved path, and the size and time of its files when it is a local directory, so
a model saved again in place is encoded again), the pooling and the precision. A second run loads them instead of
running the encoder; an edited data file or another encoder gives new keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.batching import map_sorted_batches
from src.data.token_cache import cache_key
from src.io import atomic_path
from src.pretrained import fingerprint

log = logging.getLogger(__name__)


class EmbeddedSplit(Dataset):
    """Embeddings ``[N, width]`` and 0/1 target rows of one split; items carry their row index. ``rows``: the split's
    row (text) of each item, None for made-up rows (SMOTE's)."""

    def __init__(self, features: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                 rows: np.ndarray | None = None):
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.targets = torch.as_tensor(targets)
        self.rows = rows

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, indices: np.ndarray) -> EmbeddedSplit:
        rows = None if self.rows is None else self.rows[np.asarray(indices)]
        indices = torch.as_tensor(indices)
        return EmbeddedSplit(self.features[indices], self.targets[indices], rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"embeddings": self.features[index], "labels": self.targets[index], "index": index}


class EmbeddingCache:
    """Pooled embeddings of a split, from the cache directory (None: no cache) or computed by the model."""

    def __init__(self, directory: str | None):
        self.directory = Path(directory) if directory else None

    def path(self, texts: list[str], tokenizer, max_length: int, net, precision: str) -> Path | None:
        if self.directory is None:
            return None
        key = [cache_key(tokenizer, texts, max_length), fingerprint(net.config.base_model), net.config.pooling,
               precision]
        return self.directory / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.npy"

    def features(self, name: str, texts: list[str], tokenizer, max_length: int, net, precision: str,
                 token_ids: Callable[[], list[np.ndarray]], batch_size: int) -> np.ndarray:
        """``[N, width]`` float32 embeddings of ``texts``; ``token_ids`` is called only when the encoder must run."""
        path = self.path(texts, tokenizer, max_length, net, precision)
        if path is not None and path.is_file():
            return np.load(path)
        started = time.perf_counter()
        device = next(net.parameters()).device
        was_training = net.training
        net.eval()
        try:
            features = map_sorted_batches(lambda padded: net.embed(**padded), token_ids(), tokenizer.pad_token_id,
                                          batch_size, net.head.width, device, precision,
                                          description=f"encoding {name}")
        finally:
            net.train(was_training)
        where = ""
        if path is not None:
            with atomic_path(path) as temporary:  # concurrent jobs may write the same key
                np.save(temporary, features)
            where = f"; cached in {path}"
        log.info(f"encoded {len(texts):,} {name} texts with {net.config.base_model} in "
                 f"{time.perf_counter() - started:.1f}s{where}")
        return features
