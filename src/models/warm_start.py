"""``init_from=<checkpoint | HF export>``: start training from a trained labelwise model's weights (not a resume).

A model fine-tuned on one dataset is a better start for a related one than the pretrained encoder: GoEmotions'
emotions before a user's support tickets, single comments before long threads of them. The new run keeps its own
config, labels, optimizer and schedule (a resume, ``ckpt_path``, would keep the old run's); from the source it
takes the encoder's weights, which must be the same architecture, and the head's weights label by label: a label
of the new run with the same name as one of the source's starts from that label's row of the output layer (and the
hidden layer / chunk scorer where both heads have one of the same shape); a new label starts fresh. The source's
thresholds and temperature are not taken: they are tuned again for the new data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from src.errors import ConfigError
from src.models.modeling_labelwise import LabelwiseForSequenceClassification

log = logging.getLogger(__name__)


def existing_source(path: str | Path) -> Path:
    """``path`` when it exists; a ConfigError naming ``init_from`` otherwise (``src.train`` checks this before it
    reads any data, so a typo costs no work)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"init_from={path}: no such file or directory. Pass a labelwise checkpoint (<run dir>/"
                          "checkpoints/best-*.ckpt) or a Hugging Face export directory (python -m src.export).")
    return path


def source_model(path: str | Path) -> LabelwiseForSequenceClassification:
    """The source as one model, loaded as ``src.predict`` loads it (a checkpoint, or an HF export; LoRA adapters
    merged); a ConfigError naming ``init_from`` otherwise."""
    from src.inference import Predictor

    path = existing_source(path)
    try:
        net = getattr(Predictor.load(path), "net", None)
    except ConfigError as error:  # its messages name ckpt_path, the key they were written for
        raise ConfigError(str(error).replace("ckpt_path=", "init_from=", 1)) from None
    if not isinstance(net, LabelwiseForSequenceClassification):
        raise ConfigError(f"init_from={path} is a seed ensemble (ensemble.ckpt) or an ONNX export: start from one "
                          "model's checkpoint or Hugging Face export (an ensemble run's summary.json lists its "
                          "members' runs).")
    return net


def warm_start(net: LabelwiseForSequenceClassification, path: str | Path) -> str:
    """Copy ``path``'s encoder and matching head weights into ``net`` in place; returns a one-line account."""
    if getattr(net.config, "lora", None):
        raise ConfigError("init_from with model.peft=lora: the adapters wrap the encoder's weights. Start from the "
                          "source with full fine-tuning, or merge the source into an HF export and use it as "
                          "model.name_or_path (its encoder is then the base the adapters train on).")
    source = source_model(path)
    state = source.state_dict()
    target = net.state_dict()
    encoder = {key: value for key, value in target.items() if key.startswith("encoder.")}
    missing = [key for key in encoder if key not in state]
    wrong = [f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}" for key, value in encoder.items()
             if key in state and state[key].shape != value.shape]
    if missing or wrong:
        problems = "; ".join([*(f"missing {key}" for key in missing[:3]), *wrong[:3]])
        raise ConfigError(f"init_from={path}: its encoder ({source.config.base_model}) is not the architecture of "
                          f"model.name_or_path={net.config.base_model} ({problems}). Set model.name_or_path to the "
                          "source's base model, or start from a model of this architecture.")
    with torch.no_grad():
        for key, value in encoder.items():
            value.copy_(state[key])
        copied = [name for name in target if name.startswith("head.") and not name.startswith("head.out_proj.")
                  and name in state and target[name].shape == state[name].shape]  # hidden layer, chunk scorer
        for name in copied:
            target[name].copy_(state[name])
        source_labels = [source.config.id2label[i] for i in range(source.config.num_labels)]
        labels = [net.config.id2label[i] for i in range(net.config.num_labels)]
        shared = [label for label in labels if label in source_labels]
        head_shapes_match = target["head.out_proj.weight"].shape[1] == state["head.out_proj.weight"].shape[1]
        if head_shapes_match:
            for label in shared:
                row, source_row = labels.index(label), source_labels.index(label)
                target["head.out_proj.weight"][row] = state["head.out_proj.weight"][source_row]
                target["head.out_proj.bias"][row] = state["head.out_proj.bias"][source_row]
    fresh = [label for label in labels if label not in shared] if head_shapes_match else labels
    new = f" (new: {', '.join(fresh[:8])}{' ...' if len(fresh) > 8 else ''})" if fresh else ""
    layers = sorted({name.rsplit(".", 1)[0] for name in copied})
    account = (f"init_from={path}: encoder ({len(encoder)} tensors) from the source; output rows of "
               f"{len(labels) - len(fresh)} of {len(labels)} labels{new}")
    account += f"; {', '.join(layers)}" if layers else ""
    if not head_shapes_match:
        account += " (the heads' widths differ: model.hidden or pooling changed, so the head starts fresh)"
    log.info(account)
    return account
