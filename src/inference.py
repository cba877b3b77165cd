"""A trained model ready to label texts: the artifact, its tokenizer, its labels and decision thresholds.

Texts are tokenised as in training (same truncation), scored in length-sorted batches under bf16 autocast where the
hardware is fast at it, and returned in input order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from src.data.batching import map_sorted_batches
from src.data.token_cache import tokenize
from src.labels import LabelSpace
from src.metrics.thresholds import Thresholds
from src.models.build import from_stored, labels_of
from src.models.modeling_labelwise import LabelwiseForSequenceClassification
from src.models.module import CHECKPOINT_KEY
from src.pretrained import load_tokenizer
from src.runtime import fast_precision, pad_multiple
from src.tracking.checkpoint import read_checkpoint


@dataclass
class Predictor:
    net: LabelwiseForSequenceClassification  # eval mode, on its device
    tokenizer: Any
    metadata: dict[str, Any]  # the checkpoint's labelwise entry (run config, MLflow run id ...)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """The model a checkpoint holds (built from its stored config: no pretrained weights are read)."""
        checkpoint = read_checkpoint(path)
        metadata = checkpoint[CHECKPOINT_KEY]
        prefix = "net."
        state = {key.removeprefix(prefix): value for key, value in checkpoint["state_dict"].items()
                 if key.startswith(prefix)}
        net = from_stored(metadata["net_config"], state).to(device)
        return cls(net=net, tokenizer=load_tokenizer(net.config.base_model), metadata=metadata)

    @property
    def labels(self) -> LabelSpace:
        return labels_of(self.net.config)

    @property
    def thresholds(self) -> Thresholds | None:
        stored = self.net.config.thresholds
        return Thresholds.from_dict(stored) if stored else None

    @property
    def max_length(self) -> int:
        return int(self.net.config.max_seq_length)

    def scores(self, texts: list[str], batch_size: int = 128, precision: str | None = None,
               description: str | None = None) -> np.ndarray:
        """``[len(texts), C]`` probabilities in input order."""
        ids = tokenize(self.tokenizer, texts, self.max_length)
        space = self.labels
        device = next(self.net.parameters()).device
        return map_sorted_batches(lambda padded: space.scores(self.net(**padded).logits), ids,
                                  self.tokenizer.pad_token_id, batch_size, space.num_labels, device,
                                  precision or fast_precision(), pad_multiple(), description)

    def predict(self, texts: list[str], batch_size: int = 128, precision: str | None = None) -> list[dict]:
        """``{"text", "labels", "scores"}`` per text, in order; blank texts never reach the model and get none."""
        records: list[dict[str, Any]] = [{"text": text, "labels": [], "scores": {}} for text in texts]
        rows = [i for i, text in enumerate(texts) if text.strip()]
        if not rows:
            return records
        space = self.labels
        scores = self.scores([texts[i] for i in rows], batch_size, precision)
        for row, probabilities, chosen in zip(rows, scores, space.decide(scores, self.thresholds)):
            records[row]["labels"] = [space.names[j] for j in np.flatnonzero(chosen)]
            records[row]["scores"] = {name: round(float(p), 6) for name, p in zip(space.names, probabilities)}
        return records
