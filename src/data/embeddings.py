"""``model=frozen_encoder``'s data: every split encoded once by the frozen backbone, batches of precomputed embeddings.

Embeddings are cached on disk (one ``.npy`` per split) under a key of the token-cache key (tokenizer, max length,
texts), the backbone (its resolved path, and the size and time of its files when it is a local directory, so a
model saved again in place is encoded again), the pooling and the precision. A second run loads them instead of
running the encoder; an edited data file or another backbone gives new keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.batching import LengthGroupedBatchSampler, sorted_batches
from src.data.datamodule import TextDataModule
from src.data.records import Split
from src.data.token_cache import cache_key
from src.models.frozen import score_embeddings
from src.models.inference import map_sorted_batches
from src.models.modeling_labelwise import pool, pooled_width
from src.models.pretrained import load_encoder, resolve
from src.runtime import fast_precision

log = logging.getLogger(__name__)


class EmbeddedSplit(Dataset):
    """Embeddings ``[N, width]`` and targets (multi-hot rows or class ids) of one split."""

    def __init__(self, features: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor):
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.targets = torch.as_tensor(targets)

    def __len__(self) -> int:
        return len(self.features)

    def subset(self, indices: np.ndarray) -> EmbeddedSplit:
        indices = torch.as_tensor(indices)
        return EmbeddedSplit(self.features[indices], self.targets[indices])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"embeddings": self.features[index], "labels": self.targets[index]}


def encode(encoder, ids: list[np.ndarray], pad_token_id: int, pooling: str, batch_size: int,
           precision: str) -> np.ndarray:
    """Pooled float32 embeddings ``[len(ids), width]`` in input order, computed in length-sorted batches."""

    def pooled(padded: dict[str, torch.Tensor]) -> torch.Tensor:
        out = encoder(**padded)
        return pool(out.last_hidden_state, padded["attention_mask"], getattr(out, "pooler_output", None), pooling)

    return map_sorted_batches(pooled, ids, pad_token_id, batch_size, pooled_width(encoder.config.hidden_size, pooling),
                              next(encoder.parameters()).device, precision)


def backbone_fingerprint(name_or_path: str) -> list:
    """The resolved path, with each file's size and modification time when it is a local directory."""
    path = Path(resolve(name_or_path))
    files = sorted(entry for entry in path.iterdir() if entry.is_file()) if path.is_dir() else []
    return [str(path), [(entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in files]]


class EmbeddingDataModule(TextDataModule):
    """A TextDataModule that serves ``{"embeddings", "labels"}`` batches of frozen-encoder embeddings.

    ``encoder`` and ``pooling`` must be the model's (the preset interpolates them); ``precision`` sets the
    encoder's autocast (default: bf16 where native). Samplers apply to the training embeddings: index samplers
    (``sampler=oversample|undersample``) and feature samplers (``sampler=smote``) alike.
    """

    def __init__(self, encoder: str, pooling: str = "mean", precision: str | None = None,
                 embeddings_cache_dir: str | None = None, **options: Any):
        super().__init__(**options)
        self.encoder_name = encoder
        self.pooling = pooling
        self.precision = precision or fast_precision()
        self.embeddings_cache_dir = embeddings_cache_dir
        self._embedded: dict[str, EmbeddedSplit] = {}

    def cache_path(self, split: Split) -> Path | None:
        if not self.embeddings_cache_dir:
            return None
        key = [cache_key(self.tokenizer, split.texts, self.max_length), backbone_fingerprint(self.encoder_name),
               self.pooling, self.precision]
        return Path(self.embeddings_cache_dir) / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]}.npy"

    def setup(self, stage: str | None = None) -> None:
        encoder = None  # loaded only when a split is not cached; released when setup ends
        for name, split in self.data.splits.items():
            if name in self._embedded:
                continue
            path = self.cache_path(split)
            if path is not None and path.is_file():
                features = np.load(path)
            else:  # token ids only when the encoder has to run
                if encoder is None:
                    encoder = load_encoder(self.encoder_name).to("cuda" if torch.cuda.is_available() else "cpu").eval()
                features = self.encode_split(encoder, name, self.tokenize(split).input_ids, path)
            embedded = EmbeddedSplit(features, split.targets(self.task, self.num_labels))
            self._embedded[name] = self.resample(embedded) if name == "train" and self.sampler is not None else embedded

    def encode_split(self, encoder, name: str, ids: list[np.ndarray], path: Path | None) -> np.ndarray:
        """Embeddings of one split, written to ``path`` (atomically: concurrent jobs may write the same key)."""
        started = time.perf_counter()
        features = encode(encoder, ids, self.tokenizer.pad_token_id, self.pooling, self.eval_batch_size,
                          self.precision)
        where = ""
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(partial, features)
            partial.replace(path)
            where = f"; cached in {path}"
        log.info(f"encoded {len(ids):,} {name} texts with {self.encoder_name} in "
                 f"{time.perf_counter() - started:.1f}s{where}")
        return features

    def resample(self, train: EmbeddedSplit) -> EmbeddedSplit:
        """Feature samplers make new embeddings; index samplers pick rows (TextDataModule.resample)."""
        if hasattr(self.sampler, "resample_features"):
            return EmbeddedSplit(*self.sampler.resample_features(train.features.numpy(), train.targets.numpy()))
        return super().resample(train)

    def embeddings(self, split: str) -> EmbeddedSplit:
        """A split's embeddings and targets as training sees them (train after any sampler)."""
        self.setup()
        return self._embedded[split]

    def score_split(self, model, split: str, precision: str | None = None) -> np.ndarray:
        """The head alone on the cached embeddings: no second pass through the encoder."""
        return score_embeddings(model, self.embeddings(split).features, self.eval_batch_size, precision)

    def _loader(self, split: str, batch_sampler) -> DataLoader:
        return DataLoader(self._embedded[split], batch_sampler=batch_sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches, seeded, sharded per DDP rank (all lengths equal: no length grouping)."""
        rows = len(self._embedded["train"])
        return self._loader("train", LengthGroupedBatchSampler([0] * rows, self.batch_size, seed=self.seed))

    def _eval_loader(self, split: str) -> DataLoader:
        return self._loader(split, sorted_batches([0] * len(self._embedded[split]), self.eval_batch_size))
