"""A labelwise classifier as a Hugging Face model: any encoder + pooling + dropout + linear head.

``python -m src.export format=hf`` copies this file into the exported directory, so it must import nothing from
this project (only torch and transformers). Stock ``*ForSequenceClassification`` heads classify from the [CLS]
token (often through an extra dense layer); our default pooling is a masked mean, which none of them computes.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class LabelwiseConfig(PretrainedConfig):
    """The encoder's own config nested under ``encoder``, plus how to pool, the task and tuned thresholds."""

    model_type = "labelwise"

    def __init__(
        self,
        encoder: dict | PretrainedConfig | None = None,
        pooling: str = "mean",
        classifier_dropout: float = 0.1,
        task: str = "multilabel",
        thresholds: dict | None = None,
        **kwargs,
    ):
        if isinstance(encoder, dict):
            encoder = AutoConfig.for_model(**encoder)
        self.encoder = encoder
        self.pooling = pooling
        self.classifier_dropout = classifier_dropout
        self.task = task
        self.thresholds = thresholds
        super().__init__(**kwargs)


def pooled_width(hidden_size: int, pooling: str) -> int:
    """Width of :func:`pool`'s output: ``cls_mean`` concatenates two vectors."""
    return hidden_size * (2 if pooling == "cls_mean" else 1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooler_output: torch.Tensor | None, mode: str) -> torch.Tensor:
    """Sentence vector from token states: masked mean, the [CLS] state, both concatenated, or BERT's pooler
    (trained by next-sentence prediction; untrained in sentence-transformers checkpoints such as MiniLM).
    The training module imports it from here, so the exported model pools exactly as it was trained."""
    if mode == "pooler":
        return pooler_output
    cls = hidden[:, 0]
    if mode == "cls":
        return cls
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    return mean if mode == "mean" else torch.cat([cls, mean], dim=-1)


class LabelwiseForSequenceClassification(PreTrainedModel):
    """Logits ``[B, num_labels]``; sigmoid them for multi-label, softmax for multi-class (``config.task``),
    and compare with ``config.thresholds`` (None means 0.5) to decide labels."""

    config_class = LabelwiseConfig
    base_model_prefix = "encoder"

    def __init__(self, config: LabelwiseConfig):
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder)
        if config.pooling != "pooler" and getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None
        width = pooled_width(config.encoder.hidden_size, config.pooling)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(width, config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # Only reached for weights missing from a checkpoint; the encoder initialises its own modules.
        if module is self.classifier:
            nn.init.normal_(module.weight, std=0.02)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        """``token_type_ids`` and other tokenizer outputs are accepted and ignored: the model was trained on
        single texts without them, exactly as labelwise runs it."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = pool(out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None), self.config.pooling)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            if self.config.task == "multilabel":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)
