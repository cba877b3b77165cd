"""LightningDataModule: load a source, carve a validation split if needed, tokenise, batch."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.augment import EasyDataAugmentation
from src.data.batching import LengthGroupedBatchSampler, PadCollator, sorted_batches
from src.data.records import LabelledData, Split
from src.data.sampling import RandomResampler
from src.data.splitting import carve_validation
from src.data.token_cache import tokenize
from src.errors import ConfigError
from src.models.inference import score_token_ids
from src.models.pretrained import load_tokenizer

log = logging.getLogger(__name__)


class TokenizedSplit(Dataset):
    """Token ids (unpadded, truncated) and targets of one split: multi-hot rows or class ids."""

    def __init__(self, input_ids: list[np.ndarray], targets: np.ndarray):
        self.input_ids = input_ids
        self.targets = torch.as_tensor(targets)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, indices: np.ndarray) -> TokenizedSplit:
        return TokenizedSplit([self.input_ids[i] for i in indices], self.targets[torch.as_tensor(indices)])

    def __getitem__(self, index: int) -> tuple[np.ndarray, torch.Tensor]:
        return self.input_ids[index], self.targets[index]


class TextDataModule(L.LightningDataModule):
    """Everything downstream reads the runtime facts from here: ``num_labels``, ``task``, ``label_names``,
    ``label_counts`` (training positives per label) and ``num_train``."""

    def __init__(
        self,
        source: Any,
        tokenizer: str,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: int = 42,
        num_workers: int = 0,
        group_by_length: bool = True,
        pad_to_multiple_of: int = 1,
        cache_dir: str | None = None,
        sampler: RandomResampler | None = None,
        augment: EasyDataAugmentation | None = None,
        **source_options: Any,
    ):
        """``sampler`` and ``augment`` change the training rows only (``sampler=...``, ``augment=...`` groups).
        ``source_options`` are the user-facing shorthands a data config exposes at its top level
        (``data.data_dir``, ``data.train``, ...); the config interpolates them into ``source``, so the
        module itself has no use for them."""
        super().__init__()
        self.source = source
        self.tokenizer_name = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.group_by_length = group_by_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.cache_dir = cache_dir
        self.sampler = sampler
        self.augment = augment
        self._data: LabelledData | None = None
        self._tokenized: dict[str, TokenizedSplit] = {}
        self._tokenizer = None

    def load(self) -> LabelledData:
        """Read the source once (idempotent) and make sure there is a validation split."""
        if self._data is None:
            data = carve_validation(self.source.load(), self.val_fraction, self.seed)
            if self.augment is not None:
                augmented = self.augment(data.splits["train"], data.num_labels)
                data = LabelledData({**data.splits, "train": augmented}, data.label_names, data.task)
            self._data = data
            sizes = ", ".join(f"{name} {len(split):,}" for name, split in self._data.splits.items())
            log.info(f"data: {self._data.task}, {self._data.num_labels} labels; {sizes}")
        return self._data

    @property
    def data(self) -> LabelledData:
        return self.load()

    @property
    def task(self) -> str:
        return self.data.task

    @property
    def label_names(self) -> list[str]:
        return self.data.label_names

    @property
    def num_labels(self) -> int:
        return self.data.num_labels

    @property
    def label_counts(self) -> np.ndarray:
        return self.data.label_counts("train")

    @property
    def num_train(self) -> int:
        return len(self.data.splits["train"])

    @property
    def fingerprint(self) -> str:
        """A short hash of every split's texts and labels and the label names: runs on the same data share it."""
        digest = hashlib.sha256(json.dumps([self.task, self.label_names]).encode())
        for name in sorted(self.data.splits):
            split = self.data.splits[name]
            digest.update(json.dumps([name, split.texts, split.labels]).encode())
        return digest.hexdigest()[:16]

    def has_split(self, name: str) -> bool:
        return name in self.data.splits

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    def tokenize(self, split: Split) -> TokenizedSplit:
        input_ids = tokenize(self.tokenizer, split.texts, self.max_length, self.cache_dir)
        return TokenizedSplit(input_ids, split.targets(self.task, self.num_labels))

    def score_split(self, model, split: str, precision: str | None = None) -> np.ndarray:
        """``model``'s probabilities for every row of ``split``, in row order, from the token ids training saw."""
        self.setup()
        return score_token_ids(model, self._tokenized[split].input_ids, self.tokenizer.pad_token_id,
                               self.eval_batch_size, precision)

    def setup(self, stage: str | None = None) -> None:
        for name, split in self.data.splits.items():
            if name not in self._tokenized:
                self._tokenized[name] = self.tokenize(split)
                if name == "train" and self.sampler is not None:
                    self._tokenized[name] = self.resample(self._tokenized[name])

    def resample(self, train: TokenizedSplit) -> TokenizedSplit:
        if not hasattr(self.sampler, "resample_indices"):
            raise ConfigError(
                f"sampler {type(self.sampler).__name__} creates new feature vectors, which token ids cannot be: "
                "it needs model=frozen_encoder (cached sentence embeddings)."
            )
        return train.subset(self.sampler.resample_indices(train.targets.numpy()))

    def _loader(self, split: str, batch_sampler) -> DataLoader:
        return DataLoader(
            self._tokenized[split],
            batch_sampler=batch_sampler,
            collate_fn=PadCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Length-grouped batches (or plain shuffled ones); sharded per DDP rank by the sampler itself."""
        dataset = self._tokenized["train"]
        lengths = dataset.lengths if self.group_by_length else [0] * len(dataset)
        return self._loader("train", LengthGroupedBatchSampler(lengths, self.batch_size, seed=self.seed))

    def _eval_loader(self, split: str) -> DataLoader:
        """Batches sorted by length. Not sharded under DDP: every rank scores the whole split, and metrics
        synchronised across ranks keep their value (all counts scale alike)."""
        return self._loader(split, sorted_batches(self._tokenized[split].lengths, self.eval_batch_size))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
