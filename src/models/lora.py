"""LoRA adapters on the encoder (``model.peft=lora``), with the ``peft`` library: the encoder's weights stay frozen,
low-rank adapters on its attention projections and the head train.

The adapters' settings are stored in the model's config (``lora``), so a checkpoint (which holds the frozen weights
and the adapters) rebuilds the same model; for inference the adapters are merged into the weights
(:func:`merge`), which gives the same logits, so eval, predict and exports see a plain encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from src.errors import ConfigError

#: The query and value projections of each model type (LoRA paper's choice), used when target_modules is null.
TARGETS = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
}
PEFT_METHODS = (None, "lora")


def require_peft():
    try:
        import peft
    except ImportError:
        raise ConfigError('model.peft=lora needs the peft package: pip install -e ".[lora]"') from None
    return peft


def settings(encoder: nn.Module, r: int = 8, alpha: float = 16, dropout: float = 0.1,
             target_modules: list[str] | None = None) -> dict[str, Any]:
    """``model.lora`` checked against ``encoder``, with the target modules filled in for its model type."""
    model_type = encoder.config.model_type
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"model.lora.r is the adapters' rank, an integer >= 1, got {r!r}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"model.lora.dropout must be in [0, 1), got {dropout!r}")
    if target_modules is None:
        if model_type not in TARGETS:
            raise ConfigError(f"model.lora.target_modules has no default for {model_type} encoders: pass the names "
                              "of its attention projections, e.g. model.lora.target_modules=[query,value]")
        target_modules = TARGETS[model_type]
    linear = sorted({name.rsplit(".", 1)[-1] for name, module in encoder.named_modules()
                     if isinstance(module, nn.Linear)})
    missing = [name for name in target_modules if name not in linear]
    if missing or not target_modules:
        raise ConfigError(f"model.lora.target_modules: {missing or '[]'} not in this {model_type} encoder; its linear "
                          f"layers are {', '.join(linear)}")
    return {"r": r, "alpha": alpha, "dropout": float(dropout), "target_modules": list(target_modules)}


def add_adapters(encoder: nn.Module, lora: Mapping[str, Any]) -> nn.Module:
    """``encoder`` wrapped with LoRA adapters (its own weights frozen)."""
    peft = require_peft()
    config = peft.LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                             target_modules=list(lora["target_modules"]), bias="none")
    return peft.get_peft_model(encoder, config)


def merge(net: nn.Module) -> None:
    """Fold the adapters into the encoder's weights, in place; the model becomes a plain one (config included)."""
    if getattr(net.config, "lora", None):
        net.encoder = net.encoder.merge_and_unload()
        del net.config.lora
