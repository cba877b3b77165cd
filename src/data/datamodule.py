"""LightningDataModule: load a source, build the label space, carve a validation split if needed, tokenise, batch.

Flow: source -> records (:class:`LabelledData`) -> :class:`~src.labels.LabelSpace` -> token ids (cached) -> sampler
-> batches of ``{"input_ids", "attention_mask", "labels", "index"}``. With ``features="embeddings"`` (a linear probe
on a frozen encoder) the model's encoder turns every split into pooled embeddings once (cached) and batches are
``{"embeddings", "labels", "index"}``; that needs the model, which :meth:`TextDataModule.attach` hands over.
"""

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
from src.data.batching import LengthGroupedBatchSampler, PadCollator, ResumableDataLoader, shard, sizes
from src.data.checks import DataChecks, check_leakage_policy, drop_leaked_train_rows, refuse_untrainable
from src.data.embeddings import EmbeddedSplit, EmbeddingCache
from src.data.records import LabelledData, Split
from src.data.splitting import carve_validation
from src.data.text_files import AUTO, check_encoding
from src.data.token_cache import tokenize_with_lengths
from src.errors import ConfigError, DataError
from src.labels import LabelSpace
from src.pretrained import load_tokenizer

log = logging.getLogger(__name__)
FEATURES = ("tokens", "embeddings")


class TokenizedSplit(Dataset):
    """Token ids (unpadded, truncated; for a hierarchical model a list of windows per text) and 0/1 target rows of
    one split; items carry their row index. ``rows``: the split's row (text) each item came from, which a sampler's
    subset repeats or drops (distillation looks texts up by it)."""

    def __init__(self, input_ids: list, targets: np.ndarray, rows: np.ndarray | None = None):
        self.input_ids = input_ids
        self.targets = torch.as_tensor(targets)
        self.rows = np.arange(len(input_ids)) if rows is None else rows
        # tokens per item (all its windows'), and windows per item of a chunked split (None otherwise): what batches
        # are sorted by and what their memory grows with; one pass, read by every loader
        self.lengths, self.costs = sizes(input_ids)

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, indices: np.ndarray) -> TokenizedSplit:
        return TokenizedSplit([self.input_ids[i] for i in indices], self.targets[torch.as_tensor(indices)],
                              self.rows[np.asarray(indices)])

    def __getitem__(self, index: int) -> tuple[np.ndarray | list[np.ndarray], torch.Tensor, int]:
        return self.input_ids[index], self.targets[index], index


class TextDataModule(L.LightningDataModule):
    """Everything downstream reads the runtime facts from :attr:`label_space` (task, label names, training counts).

    ``sampler`` and ``augment`` change the training rows only. ``val_fraction`` of train is carved off as ``val``
    when the source has no validation split (None: never carve, as evaluation of a trained model wants).
    ``labels`` fixes the label space to a trained model's: the data's labels are mapped onto its names (an unknown
    label is an error). ``test_split`` names the split the test loop evaluates.

    Loading runs the data checks (:attr:`checks`): a train split that cannot train is refused (unless ``labels`` is
    fixed: evaluating one class is fine), overlap between splits is a warning or, with ``on_leakage="error"``, an
    error; tokenising adds how many texts ``max_length`` cuts. ``encoding`` is the text encoding of the source's
    files (``auto``: detected): file-backed sources take it by interpolation (``conf/data/csv.yaml``), so here the
    name is checked before anything is read, and reported.
    """

    def __init__(
        self,
        source: Any,
        tokenizer: str,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        val_fraction: float | None = 0.1,
        seed: int = 42,
        num_workers: int = 0,
        group_by_length: bool = True,
        pad_to_multiple_of: int = 1,
        cache_dir: str | None = None,
        sampler: Any = None,
        augment: EasyDataAugmentation | None = None,
        features: str = "tokens",
        embeddings_cache_dir: str | None = None,
        labels: LabelSpace | None = None,
        test_split: str = "test",
        encoding: str = AUTO,
        on_leakage: str = "warn",
    ):
        super().__init__()
        if features not in FEATURES:
            raise ConfigError(f"data.features must be one of {FEATURES}, got {features!r}")
        self.encoding = check_encoding(encoding, "data.encoding")
        self.on_leakage = check_leakage_policy(on_leakage)
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
        self.features = features
        self.embeddings = EmbeddingCache(embeddings_cache_dir)
        self.fixed_labels = labels
        self.test_split = test_split
        self._data: LabelledData | None = None
        self._checks: DataChecks | None = None
        self._summarised = False
        self._datasets: dict[str, Dataset] = {}
        self._tokenizer = None
        self._net = None
        self._precision = "32-true"
        self._chunking: dict[str, Any] = {}

    # ---------------------------------------------------------------- records and facts

    def load(self) -> LabelledData:
        """Read the source once (idempotent), map it onto fixed labels, make sure there is a validation split."""
        if self._data is None:
            data = self.source.load()
            if self.fixed_labels is not None:
                data = onto_labels(data, self.fixed_labels)
            else:
                refuse_untrainable(data)
            if self.val_fraction is not None:
                data = carve_validation(data, self.val_fraction, self.seed)
            if self.on_leakage == "drop_from_train" and self.fixed_labels is None:
                data, dropped = drop_leaked_train_rows(data)
                if dropped:
                    data.facts.setdefault("warnings", []).append(dropped)
            self._checks = DataChecks.build(data, self.encoding, self.max_length, self.on_leakage,
                                            training=self.fixed_labels is None)
            if self.augment is not None:
                augmented = self.augment(data.splits["train"], data.num_labels)
                data = data.with_splits({**data.splits, "train": augmented})
            self._data = data
            sizes = ", ".join(f"{name} {len(split):,}" for name, split in data.splits.items())
            log.info(f"data: {data.task}, {data.num_labels} labels; {sizes}")
        return self._data

    @property
    def data(self) -> LabelledData:
        return self.load()

    @property
    def checks(self) -> DataChecks:
        """The data checks (loading the data if needed); truncation is filled in as splits are tokenised."""
        self.load()
        return self._checks

    @property
    def label_space(self) -> LabelSpace:
        return self.fixed_labels or self.data.label_space

    @property
    def fingerprint(self) -> str:
        """A short hash of every split's texts and labels and the label names: runs on the same data share it."""
        digest = hashlib.sha256(json.dumps([self.data.task, self.data.label_names]).encode())
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

    def attach(self, net, precision: str) -> None:
        """The model this data feeds: ``features="embeddings"`` encodes with its frozen encoder (under
        ``precision``'s autocast, bf16 where native); a hierarchical model (``net.config.chunking``) reads texts as
        windows, which tokenising and batching follow."""
        if self.features == "embeddings" and any(p.requires_grad for p in net.encoder.parameters()):
            raise ConfigError("data.features=embeddings trains the head on embeddings computed once, so the encoder "
                              "must not train: set model.freeze_encoder=true (experiment=linear_probe sets both)")
        chunking = dict(net.config.chunking or {})
        if chunking and self.features == "embeddings":
            raise ConfigError("data.features=embeddings stores one vector per text, which a hierarchical model "
                              "(model.max_chunks) cannot use: drop one of them.")
        if chunking != self._chunking:  # anything tokenised was for another model
            self._datasets.clear()
            if self._checks is not None:
                self._checks.truncation.clear()
        self._net, self._precision, self._chunking = net, precision, chunking

    # ---------------------------------------------------------------- datasets

    def tokenize(self, split: Split, name: str | None = None) -> TokenizedSplit:
        """Token ids and targets of ``split`` (windows of them for a hierarchical model); with ``name``, its
        truncation goes into the data checks."""
        max_chunks = self._chunking.get("max_chunks", 1)
        input_ids, lengths, covered = tokenize_with_lengths(self.tokenizer, split.texts, self.max_length,
                                                            self.cache_dir, self._chunking.get("stride", 0),
                                                            max_chunks)
        if name is not None and name not in self.checks.truncation:
            self.checks.add_truncation(name, lengths, covered, max_chunks)
        return TokenizedSplit(input_ids, self.label_space.targets(split.labels))

    def setup(self, stage: str | None = None) -> None:
        for name, split in self.data.splits.items():
            if name in self._datasets:
                continue
            dataset = self.tokenize(split, name) if self.features == "tokens" else self.embed(name, split)
            if name == "train" and self.sampler is not None:
                dataset = self.resample(dataset)
            self._datasets[name] = dataset
        if not self._summarised:
            self._summarised = True
            log.info("\n".join(self.checks.summary_lines()))

    def embed(self, name: str, split: Split) -> EmbeddedSplit:
        if self._net is None:
            raise ConfigError("data.features=embeddings needs the model: call datamodule.attach(net, precision)")
        features = self.embeddings.features(name, split.texts, self.tokenizer, self.max_length, self._net,
                                            self._precision, lambda: self.tokenize(split, name).input_ids,
                                            self.eval_batch_size)
        return EmbeddedSplit(features, self.label_space.targets(split.labels), np.arange(len(split.texts)))

    def resample(self, train: Dataset) -> Dataset:
        """Index samplers pick training rows; feature samplers (SMOTE) make new embeddings."""
        targets = train.targets.numpy()
        if hasattr(self.sampler, "resample_features"):
            if self.features != "embeddings":
                raise ConfigError(
                    f"sampler {type(self.sampler).__name__} creates new feature vectors, which token ids cannot be: "
                    "it needs embeddings (experiment=linear_probe, or data.features=embeddings with "
                    "model.freeze_encoder=true)."
                )
            return EmbeddedSplit(*self.sampler.resample_features(train.features.numpy(), targets, self.label_space))
        return train.subset(self.sampler.resample_indices(targets))

    def dataset(self, split: str) -> Dataset:
        """A split as training sees it (train after any sampler)."""
        self.setup()
        return self._datasets[split]

    # ---------------------------------------------------------------- loaders

    def _loader(self, split: str, batch_sampler, loader: type[DataLoader] = DataLoader, **kwargs) -> DataLoader:
        collate = PadCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of) if self.features == "tokens" \
            else None
        return loader(self._datasets[split], batch_sampler=batch_sampler, collate_fn=collate,
                      num_workers=self.num_workers, persistent_workers=self.num_workers > 0, **kwargs)

    def lengths(self, split: str) -> list[int]:
        dataset = self._datasets[split]
        return dataset.lengths if self.features == "tokens" else [0] * len(dataset)

    def train_dataloader(self) -> DataLoader:
        """Length-grouped batches (or plain shuffled ones); sharded per DDP rank by the sampler itself; resumable
        mid-epoch."""
        lengths = self.lengths("train") if self.group_by_length else [0] * len(self._datasets["train"])
        sampler = LengthGroupedBatchSampler(lengths, self.batch_size, seed=self.seed, costs=self.costs("train"),
                                            max_cost=self._chunking.get("max_chunks_per_batch"))
        return self._loader("train", sampler, ResumableDataLoader, trained=self._batches_trained)

    def costs(self, split: str) -> list[int] | None:
        """Windows per text of a hierarchical model's split (None otherwise)."""
        return getattr(self._datasets[split], "costs", None)

    def _batches_trained(self) -> int:
        """Batches of the current epoch the fit loop has trained on (0 outside fit)."""
        trainer = self.trainer
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed if trainer is not None else 0

    def _eval_loader(self, split: str) -> DataLoader:
        """Batches sorted by length, this rank's share under DDP (the evaluation callback gathers the rows)."""
        if split not in self._datasets:
            raise DataError(f"split={split}: the data has only {sorted(self._datasets)}. Pick one of them.")
        return self._loader(split, shard(self.lengths(split), self.eval_batch_size, self.costs(split),
                                         self._chunking.get("max_chunks_per_batch")))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)


def onto_labels(data: LabelledData, space: LabelSpace) -> LabelledData:
    """``data`` with its label ids renumbered to ``space``'s names (a trained model's); a DataError naming the labels
    the model does not know."""
    unknown = sorted(set(data.label_names) - set(space.names))
    if unknown:
        raise DataError(f"labels {unknown} are not among the model's labels {list(space.names)}.")
    position = [space.names.index(name) for name in data.label_names]
    splits = {name: Split(split.texts, [sorted(position[i] for i in ids) for ids in split.labels], split.origin)
              for name, split in data.splits.items()}
    facts = {**data.facts, "task_reason": f"the trained model's ({space.task}, {space.num_labels} labels)"}
    return LabelledData(splits, list(space.names), space.task, facts)
