"""Building the model artifact: from a pretrained encoder for training (``model=...`` configs target
:func:`classifier`), or from a stored config and weights for inference."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

from src.errors import ConfigError
from src.labels import LabelSpace
from src.models import ensemble
from src.models.fast_dropout import use_fast_dropout
from src.models.layers import freeze_lowest
from src.models.lora import PEFT_METHODS, add_adapters, merge
from src.models.lora import settings as lora_settings
from src.models.modeling_labelwise import AGGREGATES, POOLINGS, LabelwiseConfig, LabelwiseForSequenceClassification
from src.pretrained import load_encoder


def label_fields(labels: LabelSpace) -> dict[str, Any]:
    """The config fields that carry the label space (ours, and Hugging Face's ``id2label``/``problem_type``)."""
    return {
        "label_space": labels.to_dict(),
        "id2label": dict(enumerate(labels.names)),
        "label2id": {name: i for i, name in enumerate(labels.names)},
        "problem_type": labels.problem_type,
    }


def labels_of(config: LabelwiseConfig) -> LabelSpace:
    return LabelSpace.from_dict(config.label_space)


def classifier(
    name_or_path: str,
    *,
    labels: LabelSpace,
    max_length: int | None = None,
    pooling: str = "mean",
    dropout: float = 0.1,
    hidden: int = 0,
    freeze_encoder: bool = False,
    fast_dropout: bool = True,
    freeze_layers: int | None = None,
    gradient_checkpointing: bool = False,
    encoder_overrides: Mapping[str, Any] | None = None,
    peft: str | None = None,
    lora: Mapping[str, Any] | None = None,
    max_chunks: int | None = None,
    chunk_stride: int = 0,
    aggregate: str = "mean",
    max_chunks_per_batch: int | None = None,
    pretrained: bool = True,
) -> LabelwiseForSequenceClassification:
    """A classifier on the encoder ``name_or_path`` (a bundled model, a local directory or a hub id), in training
    mode. ``hidden > 0`` puts a hidden GELU layer of that width in the head; ``freeze_encoder`` trains the head only;
    ``freeze_layers=N`` freezes the embeddings and the lowest N layers (src/models/layers.py);
    ``fast_dropout`` draws CPU dropout masks the cheap way (src/models/fast_dropout.py; a training-time swap that
    leaves weights and the saved config alone); ``gradient_checkpointing`` recomputes the encoder's activations in
    the backward pass (memory for time); ``encoder_overrides`` set keys of the encoder's own config (e.g. its
    ``hidden_dropout_prob``); ``peft="lora"`` trains LoRA adapters (settings ``lora``, src/models/lora.py) and the head
    instead of the encoder; ``max_chunks=K`` makes the model hierarchical (:func:`chunking`); ``pretrained=False``
    builds the encoder from its config with random weights (tests, or weights that a checkpoint replaces)."""
    if pooling not in POOLINGS:
        raise ConfigError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
    if not isinstance(hidden, int) or hidden < 0:
        raise ConfigError(f"model.hidden is the hidden layer width (0: a linear head), got {hidden!r}")
    for key, value in (("fast_dropout", fast_dropout), ("freeze_encoder", freeze_encoder),
                       ("gradient_checkpointing", gradient_checkpointing)):
        if not isinstance(value, bool):
            raise ConfigError(f"model.{key} is true or false, got {value!r}")
    if not isinstance(encoder_overrides or {}, Mapping):
        raise ConfigError(f"model.encoder_overrides is a mapping of encoder config keys, got {encoder_overrides!r}")
    if peft not in PEFT_METHODS:
        raise ConfigError(f"model.peft must be null or lora, got {peft!r}")
    if peft and freeze_encoder:
        raise ConfigError("model.peft=lora trains adapters inside the encoder: it cannot go with "
                          "model.freeze_encoder=true (which trains the head only)")
    chunks = chunking(max_chunks, chunk_stride, aggregate, max_chunks_per_batch, max_length)
    encoder = load_encoder(name_or_path, pretrained=pretrained, overrides=encoder_overrides)
    if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
        raise ConfigError(f"model.pooling=pooler: {encoder.config.model_type} encoders ({name_or_path}) have no "
                          "pooler layer; use model.pooling=cls, mean or cls_mean.")
    config = LabelwiseConfig(
        encoder=copy.deepcopy(encoder.config), pooling=pooling, classifier_dropout=dropout, head_hidden=hidden,
        base_model=name_or_path, max_seq_length=max_length, chunking=chunks, **label_fields(labels),
    )
    # from_pretrained returns eval mode and Lightning keeps submodule modes: without train(), no dropout
    net = LabelwiseForSequenceClassification(config, encoder=encoder).train()
    if freeze_encoder:
        net.encoder.requires_grad_(False)  # the optimizer factory skips frozen parameters
    if gradient_checkpointing:
        # non-reentrant: works with frozen embeddings and adapters (no inputs that require grad needed)
        net.encoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if peft:
        net.config.lora = lora_settings(net.encoder, **(lora or {}))
        net.encoder = add_adapters(net.encoder, net.config.lora)
    if freeze_layers is not None:
        freeze_lowest(net.encoder, freeze_layers)
    if fast_dropout:
        use_fast_dropout(net)
    return net


def chunking(max_chunks: int | None, stride: int, aggregate: str, max_chunks_per_batch: int | None,
             max_length: int | None) -> dict[str, Any] | None:
    """A hierarchical model's reading of long texts (None: one window, truncated at ``max_length``): up to
    ``max_chunks`` windows of ``max_length`` tokens, each repeating the ``stride`` tokens before it so no sentence
    is only ever seen cut, aggregated by ``aggregate``; batches hold at most ``max_chunks_per_batch`` windows
    (default: 8 documents' worth) so memory stays bounded however long the documents are."""
    if max_chunks is None:
        return None
    for key, value, least in (("max_chunks", max_chunks, 1), ("chunk_stride", stride, 0),
                              ("max_chunks_per_batch", max_chunks_per_batch, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise ConfigError(f"model.{key} must be an integer >= {least}, got {value!r}")
    if aggregate not in AGGREGATES:
        raise ConfigError(f"model.aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    if max_length is not None and stride * 2 > max_length - 2:
        raise ConfigError(f"model.chunk_stride={stride}: windows of data.max_length={max_length} tokens can repeat "
                          f"at most {(max_length - 2) // 2} tokens of the one before; lower model.chunk_stride.")
    return {"max_chunks": max_chunks, "stride": stride, "aggregate": aggregate,
            "max_chunks_per_batch": max_chunks_per_batch or 8 * max_chunks}


def from_stored(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
                ) -> LabelwiseForSequenceClassification | ensemble.LabelwiseEnsemble:
    """The model a checkpoint describes, in eval mode: built from its stored config (no pretrained weights are
    read), then given its weights; a ConfigError naming the missing weights otherwise. LoRA adapters are merged
    into the encoder's weights (the same logits; a plain model to evaluate, predict with and export). A config
    with ``ensemble`` (an ``ensemble.ckpt``) gives the members as one model (src/models/ensemble.py)."""
    if config.get("ensemble"):
        return ensemble.from_stored(config, state_dict)  # which builds each member here
    net = LabelwiseForSequenceClassification(LabelwiseConfig.from_dict(dict(config)))
    if getattr(net.config, "lora", None):
        net.encoder = add_adapters(net.encoder, net.config.lora)
    missing, unexpected = net.load_state_dict(dict(state_dict), strict=False)
    if missing or unexpected:
        raise ConfigError(f"the checkpoint's weights do not fit the model it describes (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}); it was probably written by another program")
    merge(net)
    return net.eval()
