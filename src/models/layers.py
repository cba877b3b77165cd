"""Where an encoder's layers are, for everything that treats them by depth: layer-wise learning-rate decay
(``optim.layer_decay``), freezing the lowest layers (``model.freeze_layers``) and gradual unfreezing.

An encoder is split into depth groups, bottom to top: group 0 is everything below the first layer (the embeddings;
in DeBERTa-v2/v3 also the relative-position embeddings and their LayerNorm, which the encoder holds beside its
layers and every layer reads), group ``i`` is layer ``i`` (1..L), and BERT's pooler sits with the top layer.
"""

from __future__ import annotations

from torch import nn

from src.errors import ConfigError

#: Where each model type keeps its stack of layers, relative to the bare encoder (``AutoModel``).
LAYERS = {
    "bert": "encoder.layer",
    "roberta": "encoder.layer",
    "xlm-roberta": "encoder.layer",
    "electra": "encoder.layer",
    "distilbert": "transformer.layer",
    "deberta": "encoder.layer",
    "deberta-v2": "encoder.layer",
}
TOP = ("pooler.",)  # modules above the last layer: trained and frozen with it


def base_encoder(encoder: nn.Module) -> nn.Module:
    """The Hugging Face encoder itself, also when a PEFT model wraps it."""
    return encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder


def depth_groups(encoder: nn.Module, option: str) -> list[list[tuple[str, nn.Parameter]]]:
    """``(name, parameter)`` lists by depth, bottom (embeddings) to top (last layer); ``option`` names the config key
    in the error for a model type whose layers are unknown."""
    encoder = base_encoder(encoder)
    model_type = encoder.config.model_type
    if model_type not in LAYERS:
        raise ConfigError(f"{option} needs to know where the layers of a {model_type} encoder are; known model types: "
                          f"{', '.join(sorted(LAYERS))}. Add it to LAYERS in src/models/layers.py, or leave {option} "
                          "at its default.")
    prefix = LAYERS[model_type] + "."
    count = len(encoder.get_submodule(LAYERS[model_type]))
    groups: list[list[tuple[str, nn.Parameter]]] = [[] for _ in range(count + 1)]
    for name, parameter in encoder.named_parameters():
        if name.startswith(prefix):
            depth = int(name.removeprefix(prefix).split(".", 1)[0]) + 1
        else:
            depth = count if name.startswith(TOP) else 0
        groups[depth].append((name, parameter))
    return groups


def freeze_lowest(encoder: nn.Module, layers: int) -> None:
    """Freeze the embeddings and the lowest ``layers`` layers (``model.freeze_layers``)."""
    groups = depth_groups(encoder, "model.freeze_layers")
    count = len(groups) - 1
    if isinstance(layers, bool) or not isinstance(layers, int) or not 0 <= layers <= count:
        raise ConfigError(f"model.freeze_layers={layers!r}: this {base_encoder(encoder).config.model_type} encoder has "
                          f"{count} layers; pass 0..{count} (0: the embeddings only), or null to freeze nothing.")
    for group in groups[: layers + 1]:
        for _, parameter in group:
            parameter.requires_grad_(False)


def fsdp_wrap_layers(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP auto-wrap policy (``strategy=fsdp``): one sharded unit per encoder layer, of any architecture
    (transformers' layers are all ``GradientCheckpointingLayer``); the rest goes into the root unit."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return recurse or isinstance(module, GradientCheckpointingLayer)
