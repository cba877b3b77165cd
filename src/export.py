"""python -m src.export ckpt_path=PATH format=hf|onnx output_dir=DIR: a trained model for use outside labelwise.

Every export is checked against the checkpoint: the exported model's logits on a few texts of different lengths
(so padding and masking are exercised) must match ours, or the command fails.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import warnings
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from src import resolvers
from src.errors import ConfigError, LabelwiseError, reported_to_user
from src.models.loading import Loaded, load_for_inference

resolvers.register()

FORMATS = ("hf", "onnx")
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # torch.onnx.export (dynamo) needs onnxscript
HF_TOLERANCE = 1e-4
ONNX_TOLERANCE = 1e-3
PARITY_TEXTS = (
    "I can't believe how wonderful this day turned out!",
    "ok",
    "This is the most unfair, rude and infuriating thing anyone has said to me, and I am still shaking with anger.",
    "Not sure how I feel about it.",
)


class ParityError(LabelwiseError):
    """The exported model does not reproduce the checkpoint's logits."""


def parity_batch(loaded: Loaded) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """A padded batch of :data:`PARITY_TEXTS` and our model's fp32 logits on it."""
    batch = loaded.tokenizer(
        list(PARITY_TEXTS), padding=True, truncation=True, max_length=loaded.max_length, return_tensors="pt"
    )
    model = loaded.model.float().cpu().eval()
    with torch.inference_mode():
        logits = model(batch["input_ids"], batch["attention_mask"]).numpy()
    return dict(batch), logits


def check_parity(name: str, exported: np.ndarray, reference: np.ndarray, tolerance: float) -> float:
    diff = float(np.abs(np.asarray(exported, dtype=np.float64) - reference).max())
    print(f"parity ({name}): max |logit difference| = {diff:.2e} on {len(reference)} texts (tolerance {tolerance:g})")
    if not diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"the {name} export disagrees with the checkpoint (max |logit difference| {diff:.3g} > {tolerance:g}); "
            "the exported files are left in place for inspection. Please report this with the model name."
        )
    return diff


def to_hf(loaded: Loaded):
    """Our TextClassifier as a ``LabelwiseForSequenceClassification`` with the same weights."""
    from src.models.modeling_labelwise import LabelwiseConfig, LabelwiseForSequenceClassification

    model, names = loaded.model, loaded.label_names
    if len(model.head) != 2:  # dropout + linear is the only head the HF model file has
        raise ConfigError("format=hf exports a linear head; this model has a hidden layer (model.hidden > 0). "
                          "Use format=onnx for it.")
    config = LabelwiseConfig(
        encoder=copy.deepcopy(model.encoder.config),
        pooling=model.hparams.pooling,
        classifier_dropout=model.hparams.dropout,
        task=loaded.task,
        thresholds=loaded.thresholds.to_dict() if loaded.thresholds else None,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        problem_type="multi_label_classification" if loaded.task == "multilabel" else "single_label_classification",
    )
    hf_model = LabelwiseForSequenceClassification(config)
    state = {
        ("classifier." + key.removeprefix("head.1.")) if key.startswith("head.1.") else key: value
        for key, value in model.state_dict().items()
        if key.startswith(("encoder.", "head.1."))
    }
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


def export_hf(loaded: Loaded, output_dir: Path) -> float:
    """A Hugging Face directory with the modeling code inside (``trust_remote_code=True``, offline); returns
    the parity check's max |logit difference| after loading it back through ``AutoModelForSequenceClassification``.

    No stock ``*ForSequenceClassification`` head computes our masked-mean pooling (they classify from [CLS]),
    so a plain load without remote code would silently change the model's predictions.
    """
    from transformers import AutoModelForSequenceClassification

    batch, reference = parity_batch(loaded)
    hf_model = to_hf(loaded)
    type(hf_model.config).register_for_auto_class()
    type(hf_model).register_for_auto_class("AutoModelForSequenceClassification")
    hf_model.save_pretrained(output_dir)
    loaded.tokenizer.save_pretrained(output_dir)

    reloaded = AutoModelForSequenceClassification.from_pretrained(output_dir, trust_remote_code=True).eval()
    with torch.inference_mode():
        logits = reloaded(**batch).logits.float().numpy()
    return check_parity("hf", logits, reference, HF_TOLERANCE)


def require_onnx() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"format=onnx needs the optional ONNX packages ({', '.join(missing)} not installed): "
            'pip install -e ".[onnx]"'
        )


def export_onnx(loaded: Loaded, output_dir: Path, opset: int = 18) -> float:
    """``model.onnx`` (+ its external weights file) with dynamic batch and sequence axes, the tokenizer, and
    ``labelwise.json`` (labels, task, thresholds, max_length); returns onnxruntime's parity difference."""
    require_onnx()
    if opset < 17:
        raise ConfigError(f"opset={opset}: use 17 or newer (needed for LayerNormalization).")
    import onnxruntime

    batch, reference = parity_batch(loaded)
    inputs = (batch["input_ids"], batch["attention_mask"])
    batch_dim, sequence_dim = torch.export.Dim("batch"), torch.export.Dim("sequence")
    axes = {0: batch_dim, 1: sequence_dim}
    path = output_dir / "model.onnx"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
            torch.onnx.export(
                loaded.model,
                inputs,
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_shapes={"input_ids": axes, "attention_mask": axes},
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
    except Exception as error:
        raise ConfigError(f"torch.onnx.export failed for this model: {str(error).splitlines()[0]}") from None
    loaded.tokenizer.save_pretrained(output_dir)
    info = {
        "label_names": loaded.label_names,
        "task": loaded.task,
        "scores": "sigmoid" if loaded.task == "multilabel" else "softmax",
        "thresholds": loaded.thresholds.to_dict() if loaded.thresholds else None,
        "max_length": loaded.max_length,
        "inputs": ["input_ids", "attention_mask"],
        "outputs": ["logits"],
    }
    (output_dir / "labelwise.json").write_text(json.dumps(info, indent=2) + "\n")

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"input_ids": inputs[0].numpy(), "attention_mask": inputs[1].numpy()}
    (logits,) = session.run(["logits"], feed)
    return check_parity("onnx", logits, reference, ONNX_TOLERANCE)


def export(cfg: DictConfig) -> Path:
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path= is required: pass ckpt_path=<run dir>/checkpoints/last.ckpt (or best-*.ckpt).")
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format}: must be one of {', '.join(FORMATS)}.")
    if not cfg.output_dir:
        raise ConfigError("output_dir= is required: pass output_dir=<directory to write the exported model to>.")
    if cfg.format == "onnx":
        require_onnx()  # before the model load
    output_dir = Path(to_absolute_path(str(cfg.output_dir)))
    loaded = load_for_inference(to_absolute_path(str(cfg.ckpt_path)), "cpu")
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.format == "hf":
        export_hf(loaded, output_dir)
        print(f"exported to {output_dir}: load with AutoModelForSequenceClassification.from_pretrained(")
        print(f"    {str(output_dir)!r}, trust_remote_code=True)  # the modeling code is in the directory")
    else:
        export_onnx(loaded, output_dir, int(cfg.opset))
        print(f"exported to {output_dir}: model.onnx (inputs input_ids, attention_mask; output logits)")
    return output_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with reported_to_user():
        export(cfg)


if __name__ == "__main__":
    main()
