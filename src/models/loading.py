"""A trained checkpoint, ready to score texts: model, tokenizer, thresholds and the settings it was trained with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class

from src.errors import ConfigError
from src.metrics.thresholds import Thresholds
from src.models.classifier import TextClassifier
from src.models.pretrained import load_tokenizer
from src.tracking.checkpoint import KEY, load_checkpoint


@dataclass
class Loaded:
    model: TextClassifier  # eval mode, on the requested device
    tokenizer: Any
    metadata: dict[str, Any]  # checkpoint["labelwise"]
    thresholds: Thresholds | None  # None: 0.5 for multi-label (arg-max for multi-class)
    max_length: int  # truncation length used in training

    @property
    def label_names(self) -> list[str]:
        return list(self.metadata["label_names"])

    @property
    def task(self) -> str:
        return self.metadata["task"]


def load_for_inference(ckpt_path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """Rebuild the model from the checkpoint alone: the encoder is built from its config (``pretrained=False``),
    so only the tokenizer/config files are read besides the checkpoint, never pretrained weights."""
    checkpoint = load_checkpoint(ckpt_path)  # clear errors for a missing file or a foreign checkpoint
    metadata = checkpoint[KEY]
    hparams = dict(checkpoint["hyper_parameters"])
    model_class = get_class(metadata["config"]["model"]["_target_"])  # TextClassifier or a subclass (LinearProbe)
    model = model_class(**hparams, pretrained=False)
    own = model.state_dict()
    # the training loss may carry buffers (pos_weight); inference has no loss, so keep the model's own keys only
    state = {key: value for key, value in checkpoint["state_dict"].items() if key in own}
    missing = sorted(set(own) - set(state))
    if missing:
        raise ConfigError(
            f"ckpt_path={ckpt_path}: the checkpoint lacks {len(missing)} weights of the model it describes "
            f"(e.g. {missing[:3]}); was {hparams['name_or_path']!r} changed since training?"
        )
    model.load_state_dict(state)
    model.to(device).eval()
    stored = metadata.get("thresholds")
    return Loaded(
        model=model,
        tokenizer=load_tokenizer(metadata["tokenizer"]),
        metadata=metadata,
        thresholds=Thresholds.from_dict(stored) if stored else None,
        max_length=int(metadata["config"]["data"]["max_length"]),
    )
