"""``model=frozen_encoder``: a head trained on a frozen encoder's pooled embeddings (a linear probe)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from src.errors import ConfigError
from src.metrics.classification import scores
from src.models.classifier import TextClassifier
from src.models.fast_dropout import use_fast_dropout
from src.models.inference import autocast_for
from src.runtime import fast_precision


class LinearProbe(TextClassifier):
    """A TextClassifier whose encoder never trains: only the head does, on embeddings the EmbeddingDataModule
    computed once (training batches are ``{"embeddings", "labels"}``).

    ``hidden=0`` keeps the dropout + linear head; ``hidden>0`` puts one hidden layer of that width (GELU) in front.
    The frozen encoder stays part of the model and of its checkpoints, so ``forward`` still takes token ids and a
    saved probe predicts, evaluates and exports like a fine-tuned model.
    """

    def __init__(self, name_or_path: str, *, hidden: int = 0, **kwargs):
        """``kwargs`` are TextClassifier's (Lightning records them as hyperparameters together with ``hidden``)."""
        if hidden < 0:
            raise ConfigError(f"model.hidden is the hidden layer width (0: a linear head), got {hidden}")
        super().__init__(name_or_path, **kwargs)
        self.encoder.requires_grad_(False)  # the optimizer factory skips frozen parameters
        if hidden:
            width, num_labels, dropout = self.head[1].in_features, self.head[1].out_features, self.hparams.dropout
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, num_labels))
            if self.hparams.fast_dropout:
                use_fast_dropout(self.head)

    def logits(self, batch: dict) -> torch.Tensor:
        return self.head(batch["embeddings"])


@torch.inference_mode()
def score_embeddings(model: LinearProbe, embeddings: torch.Tensor, batch_size: int = 1024,
                     precision: str | None = None) -> np.ndarray:
    """``[N, num_labels]`` probabilities of the head alone on precomputed embeddings, in row order."""
    model.eval()
    device = next(model.head.parameters()).device
    with autocast_for(device, precision or fast_precision()):
        parts = [scores(model.head(embeddings[start : start + batch_size].to(device)), model.hparams.task).cpu()
                 for start in range(0, len(embeddings), batch_size)]
    return torch.cat(parts).numpy()
